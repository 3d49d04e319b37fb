//! The NAT with a million sessions: how fast sessions are created (and the
//! longest stretch of 1024 creations: a rebuild of a whole session index
//! would stall the shard), the same under churn at a full table (sessions
//! timing out as new ones come), how many packets per
//! second pass through the full table, and the memory each session costs.
//! One core, pure code (no EAL, no NIC).
//!
//!   nat_scale [SESSIONS] [LOOKUPS] > nat_scale.json

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Instant;

use benches::{rss_bytes, Lcg};
use dataplane::frame::Frame;
use dataplane::nf::nat::{Nat, NatConfig, Timeouts};
use dataplane::nf::route::RustLpm;
use dataplane::nf::state::SessionState;
use dataplane::nf::{NetworkFunction, PacketCtx, Router, RouterConfig, Side, Verdict};
use dataplane::wire::checksum;
use dataplane::wire::MacAddr;

/// A 64-byte UDP frame to 10.10.2.2:9000, to the VMAC (`set_flow` fills
/// in the source).
fn template() -> Vec<u8> {
    benches::udp64([0; 4], 0, [10, 10, 2, 2]).to_vec()
}

/// Writes flow `i` of `n` into the frame: source 10.10.h.h:port,
/// destination 10.10.2.2 on one of 64 ports per million sessions (a NAT
/// port serves each remote once: each remote's 64 512 ports stay about a
/// quarter taken at any size, as at the million the figures are for).
fn set_flow(f: &mut [u8], i: u32, n: u32) {
    let remotes = 64 * n.div_ceil(1_000_000).max(1);
    let host = 2 + (i / 60_000) % 200;
    let port = 1024 + (i % 60_000) as u16;
    let remote_port = 9000 + (i % remotes) as u16;
    f[26..30].copy_from_slice(&[10, 10, 3 + (host >> 8) as u8, host as u8]);
    f[34..36].copy_from_slice(&port.to_be_bytes());
    f[36..38].copy_from_slice(&remote_port.to_be_bytes());
    f[22] = 64;
    f[24..26].copy_from_slice(&[0, 0]);
    let c = checksum::checksum(&f[14..34]);
    f[24..26].copy_from_slice(&c.to_be_bytes());
    f[40..42].copy_from_slice(&[0, 0]);
}

/// Packets per burst, as a worker receives them.
const BURST: usize = 32;

fn main() {
    // As lockstep does at start (the RSS figure counts live tables only).
    dataplane::dpdk::huge::keep_big_allocations_mapped();
    let sessions: u32 = benches::arg(1, 1_000_000);
    let lookups: u32 = benches::arg(2, 10_000_000);
    let addr = [Ipv4Addr::new(10, 10, 1, 1), Ipv4Addr::new(10, 10, 2, 1)];
    // Inside hosts live in 10.10.0.0/16 here (many source addresses).
    let cfg = Arc::new(RouterConfig {
        vmac: MacAddr([2, 0, 0x5e, 0, 1, 1]),
        addr,
        prefix_len: [16, 24],
        routes: RouterConfig::all_routes([Ipv4Addr::new(10, 10, 1, 1), addr[1]], [16, 24], &[]),
        icmp_rate: 100,
        arp_rate: 100,
        max_neighbors: 16,
        static_neighbors: vec![(Ipv4Addr::new(10, 10, 2, 2), MacAddr([2, 0, 0, 0, 2, 2]), Side::Outside)],
        nat: Some(NatConfig {
            address: u32::from(addr[1]),
            port_lo: 1024,
            port_hi: 65535,
            max_sessions: sessions as usize + 16,
            timeouts: Timeouts::default(),
        }),
    });
    let mut r = Router::new(cfg.clone(), Arc::new(RustLpm::new(&cfg.routes)));
    let mut buf = vec![0u8; 512];
    let tpl = template();
    let mut run = |r: &mut Router<RustLpm>, i: u32, t: u64| -> Verdict {
        buf[128..188].copy_from_slice(&tpl);
        set_flow(&mut buf[128..188], i, sessions);
        let mut fr = Frame::new(&mut buf, 128, 60);
        r.process(&mut fr, &PacketCtx::new(Side::Inside, t))
    };

    // Flows `first..first + count` created at `t0` on, `step` ns apart,
    // timed in stretches of 1024 as well: a stretch in which a session
    // index is rebuilt (a whole table, in the worker) stands out as the
    // longest. Returns the seconds it took, the median and the longest
    // stretch in ms.
    let mut create = |r: &mut Router<RustLpm>, first: u32, count: u32, t0: u64, step: u64| -> (f64, f64, f64) {
        let start = Instant::now();
        let (mut stretch, mut stretches) = (Instant::now(), Vec::new());
        for i in first..first + count {
            let v = run(r, i, t0 + (i - first) as u64 * step);
            assert_eq!(v, Verdict::Forward(Side::Outside), "flow {i}");
            if (i - first) % 1024 == 1023 {
                stretches.push(stretch.elapsed().as_secs_f64() * 1e3);
                stretch = Instant::now();
            }
        }
        let s = start.elapsed().as_secs_f64();
        stretches.sort_by(f64::total_cmp);
        let median = stretches.get(stretches.len() / 2).copied().unwrap_or(0.0);
        (s, median, stretches.last().copied().unwrap_or(0.0))
    };
    // Churn at a full table: every old session has timed out, so each
    // packet's sweep step frees one and the packet creates one; twice the
    // population (with deletions that left marks, enough to force a grown
    // table's rebuild). Packets far enough apart that the sweep's second
    // round finds the first round's sessions timed out too.
    const CHURN_AT: u64 = 1_000_000_000_000;
    let churn_step = Timeouts::default().udp / sessions.max(1) as u64 + 1;
    let churn_count = sessions.saturating_mul(2).min(11_000_000 - sessions);
    // The same with the tables made for every session up front
    // (`nat.preallocate`): no growth; then dropped.
    let (pre_s, pre_median_ms, pre_max_ms, pre_churn_median_ms, pre_churn_max_ms) = {
        let mut p = Router::new(cfg.clone(), Arc::new(RustLpm::new(&cfg.routes)))
            .with_preallocated_sessions()
            .expect("memory for the preallocated tables");
        let (s, median, max) = create(&mut p, 0, sessions, 1_000_000_000, 1);
        let (_, churn_median, churn_max) = create(&mut p, sessions, churn_count, CHURN_AT, churn_step);
        assert_eq!(p.nat().map(Nat::len), Some(sessions as usize));
        (s, median, max, churn_median, churn_max)
    };

    let rss0 = rss_bytes();
    let (insert_s, stretch_median_ms, stretch_max_ms) = create(&mut r, 0, sessions, 1_000_000_000, 1);
    let rss1 = rss_bytes();
    let n = r.nat().map(Nat::len).unwrap_or(0);
    assert_eq!(n, sessions as usize);

    // Through the full table in bursts of 32, as a worker sees them: with
    // the prefetch passes the worker makes over a burst (as many as the
    // table asks for), and without any.
    let mut frames = vec![[0u8; 60]; BURST];
    let mut through = |r: &mut Router<RustLpm>, prefetch: bool, t0: u64| -> f64 {
        let mut lcg = Lcg(42);
        let start = Instant::now();
        for b in 0..lookups / BURST as u32 {
            for f in frames.iter_mut() {
                f.copy_from_slice(&tpl);
                set_flow(f, (lcg.next_u64() % sessions as u64) as u32, sessions);
            }
            if prefetch {
                for stage in 0..r.prefetch_stages() {
                    for f in frames.iter() {
                        r.prefetch(f, Side::Inside, stage);
                    }
                }
            }
            for f in frames.iter_mut() {
                let mut fr = Frame::new(f, 0, 60);
                let v = r.process(&mut fr, &PacketCtx::new(Side::Inside, t0 + b as u64));
                debug_assert_eq!(v, Verdict::Forward(Side::Outside));
            }
        }
        start.elapsed().as_secs_f64() * 1e9 / (lookups / BURST as u32 * BURST as u32) as f64
    };
    let ns_plain = through(&mut r, false, 2_000_000_000);
    let ns = through(&mut r, true, 3_000_000_000);

    // A checkpoint's round end: what changed since the round began, found
    // by a scan of the slab or read from the slots listed as they changed
    // (a primary's NAT lists them while a checkpoint runs). The round
    // passed 32 768 packets of the pcap's 1024 flows. Then what listing
    // costs a packet at worst: every packet a session's first change.
    let round = |r: &mut Router<RustLpm>, listed: bool| -> (f64, usize) {
        if let Some(nat) = r.nat_mut() {
            nat.track_changes(true);
        }
        let mark = r.nat().map_or(0, |n| n.generation());
        let mut f = [0u8; 60];
        for i in 0..32_768u32 {
            f.copy_from_slice(&tpl);
            set_flow(&mut f, (i % 1024) * (sessions / 1024).max(1), sessions);
            let mut fr = Frame::new(&mut f, 0, 60);
            r.process(&mut fr, &PacketCtx::new(Side::Inside, 4_000_000_000 + i as u64));
        }
        let nat = r.nat_mut().expect("a NAT");
        if !listed {
            nat.track_changes(false);
        }
        let mut delta = Vec::new();
        let start = Instant::now();
        let n = nat.changed_since(mark, &mut delta).unwrap_or(0);
        let ms = start.elapsed().as_secs_f64() * 1e3;
        nat.track_changes(false);
        (ms, n)
    };
    let (scan_ms, scanned) = round(&mut r, false);
    let (listed_ms, listed) = round(&mut r, true);
    assert_eq!(scanned, listed, "a round's delta, scanned or listed");
    if let Some(nat) = r.nat_mut() {
        nat.track_changes(true);
    }
    let ns_listing = through(&mut r, true, 5_000_000_000);
    if let Some(nat) = r.nat_mut() {
        nat.track_changes(false);
    }

    // A checkpoint's install: the whole table in the chunks a primary
    // sends (32 sessions each), into an empty NAT as a late backup's is
    // (tables grown as they fill).
    let install_per_s = {
        let nat = r.nat().expect("a NAT");
        let mut chunks = Vec::new();
        let mut cursor = Some(0);
        while let Some(c) = cursor {
            let mut chunk = Vec::new();
            cursor = nat.snapshot_chunk(c, 32, &mut chunk);
            chunks.push(chunk);
        }
        let mut copy = Nat::new(*nat.config());
        let start = Instant::now();
        for c in &chunks {
            copy.install_chunk(c).expect("a chunk installs");
        }
        let s = start.elapsed().as_secs_f64();
        assert_eq!(copy.len(), sessions as usize);
        sessions as f64 / s
    };

    let (_, churn_median_ms, churn_max_ms) = create(&mut r, sessions, churn_count, CHURN_AT, churn_step);
    assert_eq!(r.nat().map(Nat::len), Some(sessions as usize));

    let measured = (rss1.saturating_sub(rss0)) as f64 / sessions as f64;
    println!(
        "{{\"sessions\": {n}, \"insert_per_s\": {:.0}, \"insert_1024_median_ms\": {stretch_median_ms:.2}, \"insert_1024_max_ms\": {stretch_max_ms:.2}, \"churn_1024_median_ms\": {churn_median_ms:.2}, \"churn_1024_max_ms\": {churn_max_ms:.2}, \"preallocated_insert_per_s\": {:.0}, \"preallocated_insert_1024_median_ms\": {pre_median_ms:.2}, \"preallocated_insert_1024_max_ms\": {pre_max_ms:.2}, \"preallocated_churn_1024_median_ms\": {pre_churn_median_ms:.2}, \"preallocated_churn_1024_max_ms\": {pre_churn_max_ms:.2}, \"mpps_full_table\": {:.3}, \"ns_per_packet\": {:.1}, \"ns_per_packet_no_prefetch\": {:.1}, \"bytes_per_session_computed\": {}, \"bytes_per_session_rss\": {:.1}, \"install_per_s\": {install_per_s:.0}, \"round_delta_sessions\": {listed}, \"round_delta_scan_ms\": {scan_ms:.3}, \"round_delta_listed_ms\": {listed_ms:.3}, \"ns_per_packet_listing_changes\": {ns_listing:.1}}}",
        sessions as f64 / insert_s,
        sessions as f64 / pre_s,
        1e3 / ns,
        ns,
        ns_plain,
        Nat::bytes_per_session(),
        measured
    );
}
