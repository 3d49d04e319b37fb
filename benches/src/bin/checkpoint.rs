//! How long the checkpoint protocol takes to bring a late NAT backup into
//! sync, and what it costs the primary meanwhile. A primary worker on
//! lcore 1 holds SESSIONS NAT sessions (made before it starts); a backup
//! that starts empty on the main lcore, on the other core, follows it over
//! a `net_ring` link (1024 frames each way, flow control on, as in `pair`).
//! Two cases: the primary idle (its source a `net_null` that receives
//! nothing), and under load (the throughput benchmark's pcap, 1024 flows,
//! at the full rate of one core). Reported: milliseconds from the backup's
//! start to its synchronization by the checkpoint, the pieces sent, and
//! under load the primary's Mpps in the 0.5 s before the backup started
//! and while the checkpoint ran.
//!
//!   checkpoint PCAP [SESSIONS] [RUNS] [--no-huge] > checkpoint.json

use std::net::Ipv4Addr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use benches::{null_sink, pcap_source, port_config, replicating_worker, BenchNode, ReplPools};
use dataplane::dpdk::lpm::DpdkLpm;
use dataplane::dpdk::ring::RingPort;
use dataplane::dpdk::{lcore, Eal, Mbuf, Mempool, RxBurst};
use dataplane::nf::nat::{NatConfig, Timeouts};
use dataplane::nf::{Router, RouterConfig, Side};
use dataplane::wire::checksum;
use dataplane::worker::{Mode, WorkerCmd};

const FLOW_WINDOW: u64 = 512;

/// The benchmark router's configuration with a NAT for `sessions` more
/// than the pcap's flows, whose sessions never time out in a run.
fn config(sessions: usize) -> Arc<RouterConfig> {
    let mut c = (*benches::router_config(true)).clone();
    let day = 86_400 * 1_000_000_000u64;
    c.nat = Some(NatConfig {
        address: u32::from(Ipv4Addr::new(10, 10, 2, 1)),
        port_lo: 1024,
        port_hi: 65535,
        max_sessions: sessions + 4096,
        timeouts: Timeouts {
            tcp_established: day,
            tcp_transitory: day,
            tcp_reset: day,
            udp: day,
            icmp: day,
        },
    });
    Arc::new(c)
}

/// The IPv4 packet of flow `i`: UDP from 10.10.1.x:port to 10.10.2.2 on one
/// of 64 remote ports (each remote's external ports stay under a quarter
/// taken at a million).
fn flow(i: u32) -> Vec<u8> {
    let mut f = benches::udp64([0; 4], 0, [10, 10, 2, 2]).to_vec();
    let host = 2 + (i / 60_000) % 250;
    f[26..30].copy_from_slice(&[10, 10, 1, host as u8]);
    f[34..36].copy_from_slice(&(1024 + (i % 60_000) as u16).to_be_bytes());
    f[36..38].copy_from_slice(&(9000 + (i % 64) as u16).to_be_bytes());
    f[24..26].copy_from_slice(&[0, 0]);
    let c = checksum::checksum(&f[14..34]);
    f[24..26].copy_from_slice(&c.to_be_bytes());
    f[40..42].copy_from_slice(&[0, 0]);
    f[14..].to_vec()
}

struct Bed {
    primary: ReplPools,
    backup: ReplPools,
    pcap: String,
    sessions: u32,
    lcore: u32,
    eal: Eal,
}

struct Run {
    ms: f64,
    pieces: u64,
    /// Of the checkpoint that brought the backup into sync: its rounds,
    /// and how long its close held the primary's data ports.
    rounds: u64,
    hold_ms: f64,
    mpps_before: f64,
    mpps_during: f64,
}

fn run(bed: &Bed, tag: &str, lpm: &Arc<DpdkLpm>, loaded: bool) -> Run {
    let cfg = config(bed.sessions as usize);
    let mut nat = Router::new(cfg.clone(), lpm.clone());
    if let Some(n) = nat.nat_mut() {
        for i in 0..bed.sessions {
            n.outbound(&mut flow(i), 1).expect("a session");
        }
    }
    let backup_nat = Router::new(cfg, lpm.clone());
    // Idle: a ring the benchmark puts one packet into (a stream under way,
    // if only just: state without a sequence number would need no
    // checkpoint).
    let pcap = loaded.then(|| pcap_source(&format!("net_pcap_{tag}"), &bed.pcap, &bed.primary.pkt));
    let ring = RingPort::create_split(&format!("{tag}_src"), 1024, 1024)
        .and_then(|r| r.started(&port_config(), &bed.primary.pkt))
        .expect("ring");
    let src = pcap.as_ref().unwrap_or(&ring.port);
    let null = |name: &str, pool: &Mempool| null_sink(&format!("net_null_{tag}{name}"), pool);
    let sink = null("s", &bed.primary.pkt);
    let (b_in, b_out) = (null("bi", &bed.backup.pkt), null("bo", &bed.backup.pkt));
    let link = RingPort::create_split(&format!("{tag}_link"), 1024, 1024)
        .and_then(|r| r.started(&port_config(), &bed.primary.pkt))
        .expect("link");
    let far = link
        .peer(&format!("{tag}_far"))
        .and_then(|p| p.started(&port_config(), &bed.backup.pkt))
        .expect("the link's far end");
    let p: BenchNode<_> = replicating_worker(nat, 1, [src, &sink], &link.port, &bed.primary, FLOW_WINDOW);
    let b: BenchNode<_> = replicating_worker(backup_nat, 2, [&b_in, &b_out], &far.port, &bed.backup, FLOW_WINDOW);
    p.ownership.set_all(true);
    p.cmd.send(WorkerCmd::BecomePrimary { epoch: 1 }).expect("command");
    b.cmd
        .send(WorkerCmd::BecomeBackup {
            epoch: 1,
            diverged: false,
        })
        .expect("command");
    let (p_shared, b_shared) = (p.shared.clone(), b.shared.clone());
    let (p_quit, b_quit) = (p.quit.clone(), b.quit.clone());
    let primary = lcore::launch(&bed.eal, bed.lcore, move || p.worker.run()).expect("launch the primary");
    let sent = {
        let s = p_shared.clone();
        move || s.counters.snapshot().tx[Side::Outside.index()]
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while p_shared.repl.mode() != Some(Mode::Primary) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    if !loaded {
        let mut m = Mbuf::alloc(&bed.primary.pkt).expect("an mbuf");
        let mut frame = benches::udp64([10, 10, 1, 2], 4000, [10, 10, 2, 2]).to_vec();
        frame[14..].copy_from_slice(&flow(0));
        m.append(frame.len() as u16).expect("room").copy_from_slice(&frame);
        assert!(ring.inject(vec![m]).is_empty());
    }
    // The primary alone for a while (its stream under way), then the
    // backup: the clock starts as it does. Until then what the primary
    // replicates is taken off the link and dropped, as a wire does with
    // frames to a node that is not up (the ring would keep them, and the
    // backup would find the stream from sequence 1).
    let mut far_rx = far.port.rx_queue(0);
    let mut burst: RxBurst<32> = RxBurst::default();
    let mut drain_for = |d: Duration| {
        let until = Instant::now() + d;
        while Instant::now() < until {
            far_rx.rx_burst_n(&mut burst, 32);
            while burst.pop().is_some() {}
        }
    };
    drain_for(Duration::from_millis(500));
    let (tx0, t0) = (sent(), Instant::now());
    drain_for(Duration::from_millis(500));
    let (tx1, t1) = (sent(), Instant::now());
    let clock = std::thread::spawn(move || {
        let deadline = t1 + Duration::from_secs(20);
        let r = &b_shared.repl;
        while !(r.checkpoints_installed.load(Ordering::Relaxed) > 0 && r.synced.load(Ordering::Relaxed)) {
            if Instant::now() > deadline {
                let pr = &p_shared.repl;
                panic!(
                    "no checkpoint in 20 s: backup last {} synced {} gaps {} acks tx {} installed {} lost {} refused {}; primary last {} acks rx {} started {} sent {} abandoned {} pieces {}",
                    r.last_seq.load(Ordering::Relaxed),
                    r.synced.load(Ordering::Relaxed),
                    r.gaps.load(Ordering::Relaxed),
                    r.acks_tx.load(Ordering::Relaxed),
                    r.checkpoints_installed.load(Ordering::Relaxed),
                    r.checkpoint_pieces_lost.load(Ordering::Relaxed),
                    r.checkpoint_refused.load(Ordering::Relaxed),
                    pr.last_seq.load(Ordering::Relaxed),
                    pr.acks_rx.load(Ordering::Relaxed),
                    pr.checkpoints_started.load(Ordering::Relaxed),
                    pr.checkpoints_sent.load(Ordering::Relaxed),
                    pr.checkpoints_abandoned.load(Ordering::Relaxed),
                    pr.checkpoint_pieces.load(Ordering::Relaxed),
                );
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        let (tx2, t2) = (sent(), Instant::now());
        p_quit.store(true, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(200));
        b_quit.store(true, Ordering::SeqCst);
        Run {
            ms: (t2 - t1).as_secs_f64() * 1e3,
            pieces: p_shared.repl.checkpoint_pieces.load(Ordering::Relaxed),
            rounds: p_shared.repl.checkpoint_last_rounds.load(Ordering::Relaxed),
            hold_ms: p_shared.repl.checkpoint_last_hold_ns.load(Ordering::Relaxed) as f64 / 1e6,
            mpps_before: (tx1 - tx0) as f64 / (t1 - t0).as_secs_f64() / 1e6,
            mpps_during: (tx2 - tx1) as f64 / (t2 - t1).as_secs_f64() / 1e6,
        }
    });
    b.worker.run();
    primary.join().expect("primary");
    let result = clock.join().expect("clock");
    drop(far);
    drop(link);
    drop(ring);
    for mut p in pcap.into_iter().chain([sink, b_in, b_out]) {
        let _ = p.close();
    }
    result
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let pcap = args
        .get(1)
        .cloned()
        .expect("usage: checkpoint PCAP [SESSIONS] [RUNS] [--no-huge]");
    let sessions: u32 = benches::arg(2, 100_000);
    let runs: u32 = benches::arg(3, 3);
    let huge = !args.iter().any(|a| a == "--no-huge");
    let (eal, lcore) = benches::two_lcore_eal("checkpoint", huge);
    let bed = Bed {
        primary: ReplPools::for_node("ck_p"),
        backup: ReplPools::for_node("ck_b"),
        pcap,
        sessions,
        lcore,
        eal,
    };
    let lpm = Arc::new(DpdkLpm::new("ck_routes", &benches::router_config(true).routes).expect("rte_lpm"));
    let mut out = Vec::new();
    for (name, loaded) in [("idle", false), ("loaded", true)] {
        let results: Vec<Run> = (0..runs)
            .map(|k| run(&bed, &format!("{name}{k}"), &lpm, loaded))
            .collect();
        let ms: Vec<f64> = results.iter().map(|r| r.ms).collect();
        out.push(format!(
            "\"{name}\": {{\"ms\": {:.1}, \"runs_ms\": [{}], \"pieces\": {}, \"rounds\": {}, \"hold_ms_max\": {:.3}, \"mpps_before\": {:.2}, \"mpps_during\": {:.2}}}",
            benches::median(ms.clone()),
            ms.iter().map(|m| format!("{m:.1}")).collect::<Vec<_>>().join(", "),
            results.iter().map(|r| r.pieces).max().unwrap_or(0),
            results.iter().map(|r| r.rounds).max().unwrap_or(0),
            results.iter().map(|r| r.hold_ms).fold(0.0, f64::max),
            benches::median(results.iter().map(|r| r.mpps_before).collect()),
            benches::median(results.iter().map(|r| r.mpps_during).collect()),
        ));
    }
    let source = std::path::Path::new(&bed.pcap)
        .file_name()
        .map_or(String::new(), |n| n.to_string_lossy().into_owned());
    println!(
        "{{\"sessions\": {sessions}, \"pcap\": \"{source}\", \"runs\": {runs}, {}}}",
        out.join(", ")
    );
}
