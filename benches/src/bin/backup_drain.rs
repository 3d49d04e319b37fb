//! How fast a backup follows the replication stream. The main lcore writes
//! a stream of small packets' DATA records, batched as a primary sends them
//! (1514-byte frames of 64-byte packets, sequence 1 onwards), into the
//! backup's replication port (a `net_ring`) as fast as the backup takes
//! them; the backup worker, on the other lcore, processes it; the time to
//! its last sequence gives the records per second: the rate a primary can
//! sustain with this backup in step. For `forward`, `router` and `nat` over
//! the throughput benchmark's flows.
//!
//! Twice for each: without and with the backup's own copies of the
//! packets (`with_copies`): in a deployment the backup's data ports see the
//! same traffic, and it takes every copy into its ingress window for the
//! replica to retire. The feeder puts each frame's packets into the
//! backup's inside port (a `net_ring`) just before the frame itself, so a
//! copy is never later than a NIC's would be.
//!
//!   backup_drain [RECORDS] [RUNS] [--no-huge] > backup_drain.json
//!   (BACKUP_DRAIN_ONLY=forward,nat: those functions only)

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use benches::{ReplPools, ENC};
use dataplane::dpdk::lpm::DpdkLpm;
use dataplane::dpdk::ring::RingPort;
use dataplane::dpdk::{lcore, Eal, Mbuf, Mempool, RxBurst};
use dataplane::nf::{Forward, NetworkFunction, Router, Side};
use dataplane::replication::ReplHeader;
use dataplane::replication::HEADER_LEN;
use dataplane::wire::ethernet::{EtherType, EthernetFrame, HEADER_LEN as ETH_LEN};
use dataplane::wire::replication::{put_record_header, FrameType, ReplicationFrame, RECORD_HEADER_LEN};

const FLOWS: u32 = 1024;
const BATCH_BYTES: usize = 1514;

/// Flow `i` of the throughput benchmark's pcap: 64-byte UDP frames from
/// 10.10.1.2 to 10.10.2.2, to the virtual MAC.
fn packet(i: u32) -> [u8; 60] {
    benches::udp64([10, 10, 1, 2], 1024 + (i % FLOWS) as u16, [10, 10, 2, 2])
}

/// The stream: `records` DATA records in BATCH frames, as a primary of
/// epoch 1 sends them (each frame's tx_done the sequence before it), fed to
/// `port` as fast as it takes them: the frames are written just before the
/// backup reads them, as a NIC's would be. Each record is a 4-byte header
/// and a copy of a prepared packet, so the feeder outruns the backup
/// (`feeder_alone` in the output says by how much).
fn feed(records: u64, frames_pool: &Mempool, port: &RingPort, copies: Option<(&Mempool, &RingPort)>) {
    let packets: Vec<[u8; 60]> = (0..FLOWS).map(packet).collect();
    let record = RECORD_HEADER_LEN + 60;
    let mut seq = 1u64;
    let mut pending: Vec<Mbuf> = Vec::with_capacity(64);
    // Whether the first pending frame's copies are in the data port.
    let mut first_copied = false;
    while seq <= records || !pending.is_empty() {
        while pending.len() < 32 && seq <= records {
            let Some(mut m) = Mbuf::alloc(frames_pool) else {
                break;
            };
            let h = ReplHeader {
                shard: 0,
                epoch: 1,
                seq,
                tx_done: seq - 1,
                time_ns: 1_000_000_000 + seq,
                ingress: 0,
                length: 0,
            };
            let buf = m.append(BATCH_BYTES as u16).expect("room");
            let mut eth = EthernetFrame::new_unchecked(&mut buf[..ETH_LEN]);
            eth.set_dst(ENC.dst);
            eth.set_src(ENC.src);
            eth.set_ethertype(EtherType::LOCKSTEP);
            let body_at = ETH_LEN + HEADER_LEN;
            let mut off = body_at;
            while off + record <= BATCH_BYTES && seq <= records {
                let (head, body) = buf[off..off + record].split_at_mut(RECORD_HEADER_LEN);
                put_record_header(head.try_into().expect("record header"), Side::Inside as u16, 60);
                body.copy_from_slice(&packets[((seq - 1) % FLOWS as u64) as usize]);
                off += record;
                seq += 1;
            }
            let h = ReplHeader {
                length: (off - body_at) as u16,
                ..h
            };
            ReplicationFrame::new_unchecked(&mut buf[ETH_LEN..body_at]).emit(FrameType::Batch, &h);
            m.trim((BATCH_BYTES - off) as u16);
            pending.push(m);
        }
        if let Some((pool, data)) = copies {
            // Each frame's copies go in just before the frame; a refused
            // frame stays first in `pending`, its copies sent already.
            let mut frames = std::mem::take(&mut pending).into_iter();
            while let Some(frame) = frames.next() {
                if !std::mem::take(&mut first_copied) {
                    send_copies(&frame, pool, data);
                }
                if let Some(f) = port.inject(vec![frame]).pop() {
                    pending.push(f);
                    pending.extend(frames.by_ref());
                    first_copied = true;
                }
            }
        } else {
            pending = port.inject(std::mem::take(&mut pending));
        }
    }
}

/// Puts a batch frame's packets, in order, into the backup's data port,
/// waiting while its ring is full (the backup drains it every iteration).
fn send_copies(frame: &Mbuf, pool: &Mempool, data: &RingPort) {
    let d = frame.data();
    let body_at = ETH_LEN + HEADER_LEN;
    let body = &d[body_at..];
    let record = RECORD_HEADER_LEN + 60;
    let n = body.len() / record;
    let mut copies = Vec::with_capacity(n);
    while !Mbuf::alloc_bulk(pool, &mut copies, n) {
        std::hint::spin_loop();
    }
    for (m, r) in copies.iter_mut().zip(body.chunks_exact(record)) {
        m.append(60).expect("room").copy_from_slice(&r[RECORD_HEADER_LEN..]);
    }
    while !copies.is_empty() {
        copies = data.inject(copies);
    }
}

/// Fields drop in order: the pools before the EAL.
struct Bed {
    pools: ReplPools,
    frames: Arc<Mempool>,
    /// The backup's copies of the packets (`with_copies`).
    copies: Arc<Mempool>,
    lcore: u32,
    runs: u32,
    eal: Eal,
}

/// A started `net_ring` port with rings of 1024 slots each way.
fn ring_port(bed: &Bed, name: &str) -> RingPort {
    RingPort::create_split(name, 1024, 1024)
        .and_then(|r| r.started(&benches::port_config(), &bed.pools.pkt))
        .expect("ring port")
}

/// One backup of `nf` draining `records` records, with its own copies of
/// the packets or without; returns records/s.
fn drain<F: NetworkFunction>(bed: &Bed, tag: &str, nf: F, records: u64, with_copies: bool) -> f64 {
    let inside = ring_port(bed, &format!("{tag}_in"));
    let outside = ring_port(bed, &format!("{tag}_out"));
    let rep = ring_port(bed, &format!("{tag}_rep"));

    let node = benches::replicating_worker(nf, 2, [&inside.port, &outside.port], &rep.port, &bed.pools, 0);
    let (worker, shared, quit) = (node.worker, node.shared, node.quit);
    let t0 = Instant::now();
    let handle = lcore::launch(&bed.eal, bed.lcore, move || worker.run()).expect("launch the backup");
    feed(
        records,
        &bed.frames,
        &rep,
        with_copies.then_some((&*bed.copies, &inside)),
    );
    let deadline = t0 + Duration::from_secs(60);
    while shared.repl.last_seq.load(Ordering::Relaxed) < records && Instant::now() < deadline {
        std::hint::spin_loop();
    }
    let secs = t0.elapsed().as_secs_f64();
    quit.store(true, Ordering::SeqCst);
    handle.join().expect("backup worker");
    let r = &shared.repl;
    assert_eq!(
        r.last_seq.load(Ordering::Relaxed),
        records,
        "{tag}: every record processed"
    );
    assert_eq!(r.gaps.load(Ordering::Relaxed), 0, "{tag}: no gap");
    assert!(r.synced.load(Ordering::Relaxed), "{tag}: synchronized");
    if with_copies {
        // Every copy retired by its replica: none left, none pushed out.
        let (len, evicted) = (
            r.window_len.load(Ordering::Relaxed),
            r.window_evicted.load(Ordering::Relaxed),
        );
        assert_eq!((len, evicted), (0, 0), "{tag}: window emptied by the replicas");
    }
    records as f64 / secs
}

/// The feeder alone, into a consumer that frees what it reads: the most a
/// backup could be measured at here.
fn feeder_only(bed: &Bed, tag: &str, records: u64, with_copies: bool) -> f64 {
    let rep = ring_port(bed, tag);
    let data = ring_port(bed, &format!("{tag}_in"));
    let frames = records.div_ceil(((BATCH_BYTES - ETH_LEN - HEADER_LEN) / (RECORD_HEADER_LEN + 60)) as u64);
    let mut rx = rep.port.rx_queue(0);
    let mut data_rx = data.port.rx_queue(0);
    let t0 = Instant::now();
    let handle = lcore::launch(&bed.eal, bed.lcore, move || {
        let mut burst: RxBurst<64> = RxBurst::default();
        let (mut got, mut copies) = (0u64, 0u64);
        while got < frames || (with_copies && copies < records) {
            got += rx.rx_burst(&mut burst) as u64;
            burst.clear();
            copies += data_rx.rx_burst(&mut burst) as u64;
            burst.clear();
        }
    })
    .expect("launch the consumer");
    feed(records, &bed.frames, &rep, with_copies.then_some((&*bed.copies, &data)));
    handle.join().expect("consumer");
    records as f64 / t0.elapsed().as_secs_f64()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let records: u64 = benches::arg(1, 1 << 20);
    let runs: u32 = benches::arg(2, 5);
    let huge = !args.iter().any(|a| a == "--no-huge");
    let (eal, lcore) = benches::two_lcore_eal("backup-drain", huge);
    let pool = benches::bench_pool;
    let bed = Bed {
        pools: ReplPools {
            pkt: pool("bd_pkt", 16383, dataplane::dpdk::mempool::DEFAULT_DATA_ROOM),
            headers: pool("bd_hdr", 1023, dataplane::replication::builder::HEADER_DATA_ROOM),
            clones: pool("bd_cln", 1023, 0),
        },
        frames: pool("bd_frames", 4095, dataplane::dpdk::mempool::DEFAULT_DATA_ROOM),
        copies: pool("bd_copies", 16383, dataplane::dpdk::mempool::DEFAULT_DATA_ROOM),
        eal,
        lcore,
        runs,
    };
    let lpm = Arc::new(DpdkLpm::new("bd_routes", &benches::router_config(false).routes).expect("rte_lpm"));
    let mut out = Vec::new();
    let only = std::env::var("BACKUP_DRAIN_ONLY").unwrap_or_default();
    for (name, nat) in [("forward", None), ("router", Some(false)), ("nat", Some(true))] {
        if !only.is_empty() && !only.split(',').any(|o| o == name) {
            continue;
        }
        // Interleaved: without copies, then with, each run.
        let (mut rates, mut with_copies) = (Vec::new(), Vec::new());
        for k in 0..bed.runs {
            for copies in [false, true] {
                let tag = format!("bd{name}{k}{}", if copies { "c" } else { "" });
                let r = match nat {
                    None => drain(&bed, &tag, Forward, records, copies),
                    Some(n) => drain(
                        &bed,
                        &tag,
                        Router::new(benches::router_config(n), lpm.clone()),
                        records,
                        copies,
                    ),
                };
                if copies { &mut with_copies } else { &mut rates }.push(r);
            }
        }
        let list = |v: &[f64]| {
            v.iter()
                .map(|r| format!("{:.2}", r / 1e6))
                .collect::<Vec<_>>()
                .join(", ")
        };
        out.push(format!(
            "\"{name}\": {{\"mpps\": {:.2}, \"runs_mpps\": [{}], \"with_copies_mpps\": {:.2}, \"with_copies_runs_mpps\": [{}]}}",
            benches::median(rates.clone()) / 1e6,
            list(&rates),
            benches::median(with_copies.clone()) / 1e6,
            list(&with_copies),
        ));
    }
    let feeder: Vec<f64> = (0..bed.runs)
        .map(|k| feeder_only(&bed, &format!("bdfeed{k}"), records, false))
        .collect();
    let feeder_copies: Vec<f64> = (0..bed.runs)
        .map(|k| feeder_only(&bed, &format!("bdfeedc{k}"), records, true))
        .collect();
    out.push(format!(
        "\"feeder_alone\": {{\"mpps\": {:.2}, \"with_copies_mpps\": {:.2}}}",
        benches::median(feeder) / 1e6,
        benches::median(feeder_copies) / 1e6
    ));
    println!("{{\"records\": {records}, \"runs\": {runs}, {}}}", out.join(", "));
}
