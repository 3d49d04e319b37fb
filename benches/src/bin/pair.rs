//! What a synchronized pair forwards. A primary worker on lcore 1 reads the
//! throughput benchmark's pcap (`net_pcap`, `infinite_rx`), replicates,
//! runs the function and sends to a `net_null`; its backup runs on the main
//! lcore, on the other core, and follows the stream through a `net_ring`
//! link of 1024 frames each way (the two ends of one pair of rings). For
//! each function, two ways to keep the backup in step:
//!
//! - `flow`: the backup's ACKs and the primary's flow window (the default
//!   window, 512 records): what a real replication link needs, where a
//!   backup that falls behind loses frames at its RX ring;
//! - `ring`: no flow control, only the `net_ring`'s own back-pressure (a
//!   full ring refuses the primary's frame, and the primary drops the
//!   packet before processing it): ideal, instant and free, which no NIC
//!   gives.
//!
//! Both keep the backup synchronized (checked: no gap); the first's rate
//! over the second's is what the ACK round trip costs.
//!
//!   pair PCAP [SECONDS] [RUNS] [--no-huge] > pair.json
//!   (PAIR_ONLY=forward,nat: those functions only; PAIR_WINDOW=n: another
//!   flow window)

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use benches::{null_sink, pcap_source, port_config, replicating_worker, BenchNode, ReplPools};
use dataplane::dpdk::lpm::DpdkLpm;
use dataplane::dpdk::ring::RingPort;
use dataplane::dpdk::{lcore, Eal, Mempool};
use dataplane::nf::{DropReason, Forward, NetworkFunction, Router, Side};
use dataplane::worker::{Mode, WorkerCmd};

/// The flow window of a node with the default configuration (half its
/// `rx_desc` of 1024).
const FLOW_WINDOW: u64 = 512;

struct Bed {
    /// The flow window of the `flow` runs.
    window: u64,
    primary: ReplPools,
    backup: ReplPools,
    pcap: String,
    seconds: f64,
    lcore: u32,
    eal: Eal,
}

/// What one run measured.
struct Run {
    /// Packets the primary forwarded per second.
    mpps: f64,
    /// Records the backup processed per second.
    backup_mpps: f64,
    /// The backup had every sequence at the end.
    synced: bool,
    /// Packets the primary dropped because the ring refused their replica.
    refused: u64,
    /// Time flow control held the primary back, ms.
    held_ms: f64,
}

/// One run of `make()`'s function with flow control on or off.
fn run<F: NetworkFunction + 'static>(bed: &Bed, tag: &str, make: impl Fn() -> F, flow: bool) -> Run {
    let window = if flow { bed.window } else { 0 };
    let src = pcap_source(&format!("net_pcap_{tag}"), &bed.pcap, &bed.primary.pkt);
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

    let p: BenchNode<F> = replicating_worker(make(), 1, [&src, &sink], &link.port, &bed.primary, window);
    let b: BenchNode<F> = replicating_worker(make(), 2, [&b_in, &b_out], &far.port, &bed.backup, window);
    b.cmd
        .send(WorkerCmd::BecomeBackup {
            epoch: 1,
            diverged: false,
        })
        .expect("command");
    p.ownership.set_all(true);
    p.cmd.send(WorkerCmd::BecomePrimary { epoch: 1 }).expect("command");
    let (p_shared, b_shared) = (p.shared.clone(), b.shared.clone());
    let (p_quit, b_quit) = (p.quit.clone(), b.quit.clone());
    let primary = lcore::launch(&bed.eal, bed.lcore, move || p.worker.run()).expect("launch the primary");

    // The clock: warm up, measure, stop both (the backup runs on this
    // thread, the main lcore).
    let seconds = bed.seconds;
    let clock = std::thread::spawn(move || {
        let snap = || {
            let c = p_shared.counters.snapshot();
            (
                c.tx[Side::Outside.index()],
                b_shared.repl.last_seq.load(Ordering::Relaxed),
                Instant::now(),
            )
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while p_shared.repl.mode() != Some(Mode::Primary) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        std::thread::sleep(Duration::from_millis(500));
        let (tx0, seq0, t0) = snap();
        std::thread::sleep(Duration::from_secs_f64(seconds));
        let (tx1, seq1, t1) = snap();
        p_quit.store(true, Ordering::SeqCst);
        // The backup (the main thread) stops once what the primary sent
        // is drained.
        std::thread::sleep(Duration::from_millis(200));
        b_quit.store(true, Ordering::SeqCst);
        let secs = (t1 - t0).as_secs_f64();
        let r = &b_shared.repl;
        let synced = r.synced.load(Ordering::Relaxed) && r.gaps.load(Ordering::Relaxed) == 0;
        Run {
            mpps: (tx1 - tx0) as f64 / secs,
            backup_mpps: (seq1 - seq0) as f64 / secs,
            synced,
            refused: p_shared.counters.drops[DropReason::ReplicationRefused as usize].load(Ordering::Relaxed),
            held_ms: p_shared.repl.flow_held_ns.load(Ordering::Relaxed) as f64 / 1e6,
        }
    });
    b.worker.run();
    // Joining an lcore spins (`rte_eal_wait_lcore`): only once the backup,
    // on this core, is done.
    primary.join().expect("primary");
    let result = clock.join().expect("clock");
    assert!(result.synced, "{tag}: the backup kept every sequence");
    drop(far);
    drop(link);
    for mut p in [src, sink, b_in, b_out] {
        let _ = p.close();
    }
    result
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let pcap = args
        .get(1)
        .cloned()
        .expect("usage: pair PCAP [SECONDS] [RUNS] [--no-huge]");
    let seconds: f64 = benches::arg(2, 3.0);
    let runs: u32 = benches::arg(3, 3);
    let huge = !args.iter().any(|a| a == "--no-huge");
    let (eal, lcore) = benches::two_lcore_eal("pair", huge);
    let bed = Bed {
        window: std::env::var("PAIR_WINDOW")
            .ok()
            .and_then(|w| w.parse().ok())
            .unwrap_or(FLOW_WINDOW),
        primary: ReplPools::for_node("pr_p"),
        backup: ReplPools::for_node("pr_b"),
        pcap,
        seconds,
        lcore,
        eal,
    };
    let lpm = Arc::new(DpdkLpm::new("pr_routes", &benches::router_config(false).routes).expect("rte_lpm"));
    let only = std::env::var("PAIR_ONLY").unwrap_or_default();
    let mut out = Vec::new();
    for (name, nat) in [("forward", None), ("router", Some(false)), ("nat", Some(true))] {
        if !only.is_empty() && !only.split(',').any(|o| o == name) {
            continue;
        }
        let mut fields = Vec::new();
        for flow in [true, false] {
            let mode = if flow { "flow" } else { "ring" };
            let results: Vec<Run> = (0..runs)
                .map(|k| {
                    let tag = format!("{name}{mode}{k}");
                    match nat {
                        None => run(&bed, &tag, || Forward, flow),
                        Some(n) => run(&bed, &tag, || Router::new(benches::router_config(n), lpm.clone()), flow),
                    }
                })
                .collect();
            let mpps: Vec<f64> = results.iter().map(|r| r.mpps / 1e6).collect();
            fields.push(format!(
                "\"{mode}\": {{\"mpps\": {:.2}, \"runs_mpps\": [{}], \"backup_mpps\": {:.2}, \"refused\": {}, \"held_ms\": {:.0}}}",
                benches::median(mpps.clone()),
                mpps.iter().map(|m| format!("{m:.2}")).collect::<Vec<_>>().join(", "),
                benches::median(results.iter().map(|r| r.backup_mpps / 1e6).collect()),
                results.iter().map(|r| r.refused).sum::<u64>(),
                benches::median(results.iter().map(|r| r.held_ms).collect()),
            ));
        }
        out.push(format!("\"{name}\": {{{}}}", fields.join(", ")));
    }
    println!(
        "{{\"seconds\": {seconds}, \"runs\": {runs}, \"flow_window\": {}, {}}}",
        bed.window,
        out.join(", ")
    );
}
