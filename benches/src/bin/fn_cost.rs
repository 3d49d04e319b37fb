//! What the router and the NAT cost per packet on their own: the fast path
//! and the general path over the bench pcap's 1024 flows, in bursts of 32
//! as a worker sees them, without a port, a ring or an mbuf. Subtracted
//! from the time per packet of `tools/compare.py`'s runs it says how much
//! of a function's rate is the function and how much the I/O around it.
//!
//!   fn_cost [FLOWS] [PACKETS] > fn_cost.json

use std::hint::black_box;
use std::time::Instant;

use dataplane::dpdk::lpm::DpdkLpm;
use dataplane::frame::Frame;
use dataplane::nf::{NetworkFunction, PacketCtx, Router, Side, Verdict};

const BURST: usize = 32;

/// The frames of the bench pcap (`tools/gen_pcap.py udp64`): 10.10.1.2,
/// source ports 1024.., to 10.10.2.2:9000.
fn flows(n: usize) -> Vec<[u8; 60]> {
    (0..n)
        .map(|i| benches::udp64([10, 10, 1, 2], 1024 + i as u16, [10, 10, 2, 2]))
        .collect()
}

/// Nanoseconds per packet of `step` over `packets` copies of `flows`, a
/// burst at a time, each burst a microsecond of replicated time (`clock`)
/// after the last. The copy into the burst is the same in every case (and in
/// `copy_only`): it stands for the frame a port gave the worker.
fn time(
    flows: &[[u8; 60]],
    packets: usize,
    clock: &mut u64,
    mut step: impl FnMut(&mut [u8; 60], &PacketCtx) -> bool,
) -> (f64, usize) {
    let mut burst = [[0u8; 60]; BURST];
    let (mut k, mut taken) = (0, 0);
    let rounds = packets / BURST;
    let start = Instant::now();
    for _ in 0..rounds {
        for f in burst.iter_mut() {
            *f = flows[k];
            k = if k + 1 == flows.len() { 0 } else { k + 1 };
        }
        *clock += 1_000;
        let ctx = PacketCtx::new(Side::Inside, *clock);
        for f in burst.iter_mut() {
            taken += step(f, &ctx) as usize;
        }
        black_box(&burst);
    }
    (start.elapsed().as_secs_f64() * 1e9 / (rounds * BURST) as f64, taken)
}

fn main() {
    let n_flows: usize = benches::arg(1, 1024);
    let packets: usize = benches::arg(2, 10_000_000);
    let _eal = benches::table_eal("fn_cost");
    let flows = flows(n_flows.clamp(1, 60_000));
    let mut clock = 1_000_000_000;
    let mut routers = Vec::new();
    for (name, nat) in [("router", false), ("nat", true)] {
        let cfg = benches::router_config(nat);
        let lpm = DpdkLpm::new(&format!("fn_cost_{name}"), &cfg.routes).expect("rte_lpm");
        let mut r = Router::new(cfg, std::sync::Arc::new(lpm));
        // Every flow's session exists before the clock starts (the NAT's
        // new-flow cost is nat_scale's insert rate).
        for f in &flows {
            let mut b = *f;
            let v = r.process(&mut Frame::new(&mut b, 0, 60), &PacketCtx::new(Side::Inside, clock));
            assert_eq!(v, Verdict::Forward(Side::Outside), "{name}: warm-up");
        }
        routers.push((name, r));
    }
    // Five rounds, the cases interleaved (a noisy machine slows them
    // alike), the median of each; the copy's time taken off the others.
    let mut samples: Vec<(String, Vec<f64>)> = Vec::new();
    let mut record = |key: String, ns: f64| match samples.iter_mut().find(|(k, _)| *k == key) {
        Some((_, v)) => v.push(ns),
        None => samples.push((key, vec![ns])),
    };
    for _ in 0..5 {
        let (copy_ns, _) = time(&flows, packets, &mut clock, |f, _| f[0] == 2);
        record("copy_ns".into(), copy_ns);
        for (name, r) in routers.iter_mut() {
            let (fast_ns, taken) = time(&flows, packets, &mut clock, |f, ctx| r.fast(f, ctx).is_some());
            assert_eq!(
                taken,
                packets / BURST * BURST,
                "{name}: the fast path took every packet"
            );
            let (general_ns, _) = time(&flows, packets, &mut clock, |f, ctx| {
                r.process_general(&mut Frame::new(f, 0, 60), ctx) == Verdict::Forward(Side::Outside)
            });
            record(format!("{name}_fast_ns"), fast_ns - copy_ns);
            record(format!("{name}_general_ns"), general_ns - copy_ns);
        }
    }
    let mut out = vec![format!("\"flows\": {}", flows.len())];
    for (k, v) in samples {
        out.push(format!("\"{k}\": {:.2}", benches::median(v)));
    }
    println!("{{{}}}", out.join(", "));
}
