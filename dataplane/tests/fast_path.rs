//! A router worker on real DPDK ports, with its fast path: the worker runs
//! the function's fast path over a burst's leading packets and the general
//! path from the first packet the fast path declines, one by one. Whatever
//! the burst boundaries, what leaves is what the packets asked for, in
//! their order, and state a packet changes is seen by the packets after it.
//!
//! One EAL per process (shared through `common::eal`).

use std::net::Ipv4Addr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

mod common;
use common::{ring_port, wait};

use dataplane::dpdk::mempool::DEFAULT_DATA_ROOM;
use dataplane::dpdk::ring::RingPort;
use dataplane::frame::Frame;
use dataplane::nf::route::RustLpm;
use dataplane::nf::{DropReason, NetworkFunction, PacketCtx, Router, RouterConfig, Side, Verdict};
use dataplane::stats::CounterSnapshot;
use dataplane::wire::{checksum, MacAddr};

const VMAC: MacAddr = MacAddr([2, 0, 0x5e, 0, 1, 1]);
const HOST_A: MacAddr = MacAddr([2, 0, 0, 0, 1, 0xa]);
const HOST_B: MacAddr = MacAddr([2, 0, 0, 0, 1, 0xb]);
const SENDER: MacAddr = MacAddr([2, 0, 0, 0, 1, 2]);
const SERVER: MacAddr = MacAddr([2, 0, 0, 0, 2, 2]);

fn config() -> Arc<RouterConfig> {
    common::router_config(
        None,
        vec![
            (Ipv4Addr::new(10, 10, 1, 5), HOST_A, Side::Inside),
            (Ipv4Addr::new(10, 10, 2, 2), SERVER, Side::Outside),
        ],
    )
}

/// UDP from 10.10.1.2 to `dst` with `ttl`, its payload's first byte `tag`.
fn udp(dst: [u8; 4], ttl: u8, tag: u8) -> Vec<u8> {
    let mut f = vec![0u8; 60];
    f[0..6].copy_from_slice(&VMAC.0);
    f[6..12].copy_from_slice(&SENDER.0);
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    f[14] = 0x45;
    f[16..18].copy_from_slice(&46u16.to_be_bytes());
    f[22] = ttl;
    f[23] = 17;
    f[26..30].copy_from_slice(&[10, 10, 1, 2]);
    f[30..34].copy_from_slice(&dst);
    let c = checksum::checksum(&f[14..34]);
    f[24..26].copy_from_slice(&c.to_be_bytes());
    f[34..36].copy_from_slice(&4000u16.to_be_bytes());
    f[36..38].copy_from_slice(&9000u16.to_be_bytes());
    f[38..40].copy_from_slice(&26u16.to_be_bytes());
    f[42] = tag;
    f
}

/// 10.10.1.5 tells the router (10.10.1.1) it is at `mac`.
fn arp_reply(mac: MacAddr) -> Vec<u8> {
    let mut f = Vec::with_capacity(60);
    f.extend_from_slice(&VMAC.0);
    f.extend_from_slice(&mac.0);
    f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0x00, 6, 4, 0, 2]);
    f.extend_from_slice(&mac.0);
    f.extend_from_slice(&[10, 10, 1, 5]);
    f.extend_from_slice(&VMAC.0);
    f.extend_from_slice(&[10, 10, 1, 1]);
    f.resize(60, 0);
    f
}

/// Runs a standalone router worker while `frames` go into its inside port
/// in one enqueue; returns what left each port once `done` holds, and the
/// worker's counters then.
fn route(
    tag: &str,
    frames: &[Vec<u8>],
    done: impl Fn(&CounterSnapshot) -> bool,
) -> ([Vec<Vec<u8>>; 2], CounterSnapshot) {
    let cfg = config();
    run(
        tag,
        Router::new(cfg.clone(), Arc::new(RustLpm::new(&cfg.routes))),
        frames,
        done,
    )
}

/// [`route`] with any function.
fn run<F: NetworkFunction>(
    tag: &str,
    nf: F,
    frames: &[Vec<u8>],
    done: impl Fn(&CounterSnapshot) -> bool,
) -> ([Vec<Vec<u8>>; 2], CounterSnapshot) {
    let pool = common::pool(&format!("{tag}_pkts"), 511, DEFAULT_DATA_ROOM);
    let port = |what: &str| -> RingPort { ring_port(&format!("{tag}_{what}"), Some((256, 256)), 0, &pool) };
    let (inside, outside) = (port("in"), port("out"));
    let (t, shared, quit) = common::spawn_standalone(nf, &inside, &outside, true);
    let refused = inside.inject(frames.iter().map(|f| common::mbuf_of(&pool, f)).collect());
    assert!(refused.is_empty(), "the ring took every frame");
    wait("the burst processed", || done(&shared.counters.snapshot()));
    quit.store(true, Ordering::SeqCst);
    t.join().expect("worker");
    let sent = |p: &RingPort| p.take_sent(256).iter().map(|m| m.data().to_vec()).collect();
    ([sent(&inside), sent(&outside)], shared.counters.snapshot())
}

#[test]
fn a_neighbours_new_mac_reaches_the_very_next_packet_and_every_packet_leaves_in_order() {
    let frames = [
        udp([10, 10, 1, 5], 64, 1), // fast: to host A
        arp_reply(HOST_B),          // declined: 10.10.1.5 moves to B
        udp([10, 10, 1, 5], 64, 3), // to B
        udp([10, 10, 2, 2], 64, 4), // fast, the other side
        udp([10, 10, 1, 5], 1, 5),  // TTL 1: time exceeded, back inside
        udp([10, 10, 1, 5], 64, 6), // to B
        arp_reply(HOST_A),          // back to A
        udp([10, 10, 1, 5], 64, 8), // to A
    ];
    let ([inside, outside], c) = route("fp_order", &frames, |c| c.tx[0] + c.tx[1] == 6 && c.consumed == 2);
    // Whatever the burst boundaries: 1, 3, 4, 6 and 8 (the ARP replies
    // and the TTL-1 packet are the general path's).
    assert_eq!(c.fast, 5, "packets the fast path decided");
    // Routed: TTL 63, from the virtual MAC, to the MAC known at that point.
    let routed = |f: &Vec<u8>| (MacAddr(f[0..6].try_into().unwrap()), f[22], f[42]);
    assert_eq!(
        inside.iter().filter(|f| f[23] == 17).map(routed).collect::<Vec<_>>(),
        [(HOST_A, 63, 1), (HOST_B, 63, 3), (HOST_B, 63, 6), (HOST_A, 63, 8)]
    );
    assert!(inside.iter().all(|f| f[6..12] == VMAC.0));
    // The time exceeded left in its place, between packets 3 and 6.
    let kinds: Vec<u8> = inside.iter().map(|f| f[23]).collect();
    assert_eq!(kinds, [17, 17, 1, 17, 17], "UDP, UDP, ICMP, UDP, UDP");
    assert_eq!((inside[2][34], inside[2][35]), (11, 0), "ICMP time exceeded");
    assert_eq!(outside.iter().map(routed).collect::<Vec<_>>(), [(SERVER, 63, 4)]);
    for f in inside.iter().chain(&outside) {
        assert_eq!(checksum::checksum(&f[14..34]), 0, "IPv4 header checksum verifies");
    }
}

#[test]
fn a_burst_the_fast_path_takes_whole_leaves_in_order_on_both_sides() {
    let frames: Vec<Vec<u8>> = (0..96u8)
        .map(|i| {
            let dst = if i % 3 == 0 { [10, 10, 2, 2] } else { [10, 10, 1, 5] };
            udp(dst, 64, i)
        })
        .collect();
    let ([inside, outside], c) = route("fp_whole", &frames, |c| c.tx[0] + c.tx[1] == 96);
    assert_eq!(c.fast, 96);
    let tags = |v: &Vec<Vec<u8>>| v.iter().map(|f| f[42]).collect::<Vec<u8>>();
    assert_eq!(tags(&outside), (0..96).filter(|i| i % 3 == 0).collect::<Vec<u8>>());
    assert_eq!(tags(&inside), (0..96).filter(|i| i % 3 != 0).collect::<Vec<u8>>());
    assert!(outside.iter().all(|f| f[0..6] == SERVER.0 && f[22] == 63));
    assert!(inside.iter().all(|f| f[0..6] == HOST_A.0 && f[22] == 63));
}

#[test]
fn what_the_fast_path_declines_is_dropped_by_its_reason() {
    let mut bad_checksum = udp([10, 10, 2, 2], 64, 2);
    bad_checksum[25] ^= 0xff;
    let mut options = udp([10, 10, 2, 2], 64, 3);
    options[14] = 0x46;
    let frames = [
        udp([10, 10, 2, 2], 64, 1),
        bad_checksum,
        options,
        udp([10, 10, 2, 2], 64, 4),
    ];
    let drops =
        |c: &CounterSnapshot| c.drops[DropReason::BadChecksum as usize] + c.drops[DropReason::Truncated as usize];
    let ([inside, outside], c) = route("fp_drops", &frames, |c| c.tx[1] == 2 && drops(c) == 2);
    assert_eq!(c.fast, 2);
    assert!(inside.is_empty());
    assert_eq!(outside.iter().map(|f| f[42]).collect::<Vec<_>>(), [1, 4]);
}

/// Counts, per packet (its first byte), how often each path saw it; its
/// fast path takes even packets only, to the outside; the general path
/// sends the rest there too.
struct Counting {
    seen: Arc<std::sync::Mutex<Vec<(u8, &'static str)>>>,
}

impl NetworkFunction for Counting {
    fn name(&self) -> &'static str {
        "counting"
    }

    fn rewrite_span(&self) -> usize {
        0
    }

    fn fast(&mut self, data: &mut [u8], _ctx: &PacketCtx) -> Option<Side> {
        self.seen.lock().unwrap().push((data[0], "fast"));
        data[0].is_multiple_of(2).then_some(Side::Outside)
    }

    fn process(&mut self, frame: &mut Frame<'_>, _ctx: &PacketCtx) -> Verdict {
        self.seen.lock().unwrap().push((frame.data()[0], "general"));
        Verdict::Forward(Side::Outside)
    }
}

#[test]
fn each_packet_is_offered_to_the_fast_path_once_and_a_declined_one_goes_to_the_general_path_once() {
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let nf = Counting { seen: seen.clone() };
    // 0, 2, 4 fast; 5 declined; 6 fast again; 7, 9 declined; 10 fast.
    let tags = [0u8, 2, 4, 5, 6, 7, 9, 10];
    let frames: Vec<Vec<u8>> = tags.iter().map(|&t| vec![t; 60]).collect();
    let ([_, outside], c) = run("fp_once", nf, &frames, |c| c.tx[Side::Outside.index()] == 8);
    let sent: Vec<u8> = outside.iter().map(|f| f[0]).collect();
    assert_eq!(sent, tags, "in order");
    let seen = seen.lock().unwrap().clone();
    for &t in &tags {
        let fast = seen.iter().filter(|s| **s == (t, "fast")).count();
        let general = seen.iter().filter(|s| **s == (t, "general")).count();
        assert_eq!(
            (fast, general),
            (1, (t % 2) as usize),
            "packet {t}: (fast, general) offers"
        );
    }
    assert_eq!(c.fast, 5);
}
