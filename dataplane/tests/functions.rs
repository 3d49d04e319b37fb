//! The router and the NAT on frames built by scapy
//! (`tests/fixtures/make_fixtures.py`): each output is compared byte for
//! byte with the frame scapy built for it, so every incremental checksum
//! update is checked against scapy's own computation. No EAL needed.

use std::net::Ipv4Addr;
use std::sync::Arc;

mod common;

use dataplane::frame::OwnedFrame;
use dataplane::nf::nat::{NatConfig, Timeouts};
use dataplane::nf::route::{Route, RustLpm};
use dataplane::nf::state::SessionState;
use dataplane::nf::{DropReason, NetworkFunction, PacketCtx, Router, RouterConfig, Side, Verdict};
use dataplane::wire::MacAddr;

/// The frames of a classic pcap file.
fn pcap(name: &str) -> Vec<Vec<u8>> {
    let path = format!("{}/tests/fixtures/{name}.pcap", env!("CARGO_MANIFEST_DIR"));
    let b = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let mut out = Vec::new();
    let mut at = 24;
    while at + 16 <= b.len() {
        let len = u32::from_le_bytes([b[at + 8], b[at + 9], b[at + 10], b[at + 11]]) as usize;
        out.push(b[at + 16..at + 16 + len].to_vec());
        at += 16 + len;
    }
    out
}

fn one(name: &str) -> Vec<u8> {
    pcap(name).remove(0)
}

const SEC: u64 = 1_000_000_000;

fn config(nat: bool) -> Arc<RouterConfig> {
    common::router_config(nat.then(|| common::nat_config(65536)), Vec::new())
}

fn router(nat: bool) -> Router<RustLpm> {
    let cfg = config(nat);
    let lpm = Arc::new(RustLpm::new(&cfg.routes));
    Router::new(cfg, lpm)
}

/// Runs one frame through `r`; returns the verdict and the bytes after.
fn run(r: &mut Router<RustLpm>, bytes: &[u8], ingress: Side, now_ns: u64) -> (Verdict, Vec<u8>) {
    let mut f = OwnedFrame::from_bytes(bytes);
    let v = f.with_frame(|fr| r.process(fr, &PacketCtx::new(ingress, now_ns)));
    (v, f.data().to_vec())
}

/// A router that already knows the server's MAC.
fn router_knowing_server(nat: bool) -> Router<RustLpm> {
    let mut r = router(nat);
    let (v, _) = run(&mut r, &one("arp_reply_from_server"), Side::Outside, 0);
    assert_eq!(v, Verdict::Consumed);
    r
}

#[test]
fn arp_for_the_gateway_is_answered_from_the_virtual_mac_and_the_asker_is_learned() {
    let mut r = router(false);
    let (v, out) = run(&mut r, &one("arp_who_has_gw"), Side::Inside, 0);
    assert_eq!(v, Verdict::Forward(Side::Inside));
    assert_eq!(out, one("expect_arp_reply_gw"));
    assert_eq!(
        r.neighbors.get(u32::from(Ipv4Addr::new(10, 10, 1, 2)), Side::Inside),
        Some(MacAddr([2, 0, 0, 0, 1, 2]))
    );
}

#[test]
fn the_first_packet_to_an_unknown_next_hop_waits_for_the_arp_answer_and_then_leaves() {
    let mut r = router(false);
    let (v, out) = run(&mut r, &one("echo_client_to_server"), Side::Inside, 0);
    assert_eq!(v, Verdict::Forward(Side::Outside), "the frame became the ARP request");
    assert_eq!(out, one("expect_arp_request_server"));
    // One packet waits per next hop: the next is dropped, and asks again.
    let (v, out) = run(&mut r, &one("echo_client_to_server"), Side::Inside, 1);
    assert_eq!(
        v,
        Verdict::Replaced {
            out: Side::Outside,
            dropped: DropReason::ArpPending
        }
    );
    assert_eq!(out, one("expect_arp_request_server"));
    // The answer: the held packet leaves in its place, routed as any other.
    let (v, out) = run(&mut r, &one("arp_reply_from_server"), Side::Outside, 2);
    assert_eq!(v, Verdict::Forward(Side::Outside));
    assert_eq!(out, one("expect_echo_forwarded"));
    assert_eq!(
        (
            r.transient.held().len(),
            r.transient.held().released,
            r.transient.held().expired
        ),
        (0, 1, 0)
    );
}

#[test]
fn a_packet_that_waited_longer_than_three_seconds_is_not_sent() {
    let mut r = router(false);
    run(&mut r, &one("echo_client_to_server"), Side::Inside, 0);
    let (v, _) = run(&mut r, &one("arp_reply_from_server"), Side::Outside, 3 * SEC + 1);
    assert_eq!(v, Verdict::Consumed);
    assert_eq!(
        (
            r.transient.held().len(),
            r.transient.held().released,
            r.transient.held().expired
        ),
        (0, 0, 1)
    );
}

#[test]
fn a_copy_of_the_arp_answer_sends_the_packet_this_shard_held() {
    let mut r = router(false);
    run(&mut r, &one("echo_client_to_server"), Side::Inside, 0);
    let mut f = OwnedFrame::from_bytes(&one("arp_reply_from_server"));
    let ctx = PacketCtx {
        copy: true,
        ..PacketCtx::new(Side::Outside, 1)
    };
    assert_eq!(f.with_frame(|fr| r.process(fr, &ctx)), Verdict::Forward(Side::Outside));
    assert_eq!(f.data(), &one("expect_echo_forwarded")[..]);
}

#[test]
fn a_routed_packet_gets_ttl_minus_one_the_next_hop_mac_and_a_valid_checksum() {
    let mut r = router_knowing_server(false);
    let (v, out) = run(&mut r, &one("echo_client_to_server"), Side::Inside, 1);
    assert_eq!(v, Verdict::Forward(Side::Outside));
    assert_eq!(out, one("expect_echo_forwarded"));
}

#[test]
fn an_echo_request_to_the_gateway_is_answered() {
    let mut r = router(false);
    let (v, out) = run(&mut r, &one("echo_client_to_gw"), Side::Inside, 0);
    assert_eq!(v, Verdict::Forward(Side::Inside));
    assert_eq!(out, one("expect_echo_reply_gw"));
}

#[test]
fn ttl_one_gets_an_icmp_time_exceeded_quoting_the_header_and_eight_bytes() {
    let mut r = router_knowing_server(false);
    let (v, out) = run(&mut r, &one("udp_ttl1"), Side::Inside, 0);
    assert_eq!(
        v,
        Verdict::Replaced {
            out: Side::Inside,
            dropped: DropReason::TtlExpired
        }
    );
    assert_eq!(out, one("expect_time_exceeded"));
}

#[test]
fn no_route_gets_an_icmp_net_unreachable() {
    let mut r = router(false);
    let (v, out) = run(&mut r, &one("udp_no_route"), Side::Inside, 0);
    assert_eq!(
        v,
        Verdict::Replaced {
            out: Side::Inside,
            dropped: DropReason::NoRoute
        }
    );
    assert_eq!(out, one("expect_net_unreachable"));
}

#[test]
fn icmp_errors_are_rate_limited_on_packet_time() {
    let mut r = router(false);
    let frame = one("udp_ttl1");
    let verdicts: Vec<Verdict> = (0..150).map(|_| run(&mut r, &frame, Side::Inside, 5 * SEC).0).collect();
    let sent = verdicts
        .iter()
        .filter(|v| matches!(v, Verdict::Replaced { .. }))
        .count();
    assert_eq!(sent, 100, "the bucket holds one second of errors");
    assert_eq!(
        verdicts
            .iter()
            .filter(|v| **v == Verdict::Drop(DropReason::RateLimited))
            .count(),
        50
    );
    assert!(
        matches!(
            run(&mut r, &frame, Side::Inside, 5 * SEC + SEC / 100).0,
            Verdict::Replaced { .. }
        ),
        "10 ms refill one"
    );
}

/// A table as a checkpoint's first round carries it, in chunks of
/// `records`, then its layout if it has one.
fn whole(t: &dyn SessionState, records: usize) -> Vec<Vec<u8>> {
    let (mut cursor, mut out) = (Some(0), Vec::new());
    while let Some(c) = cursor {
        let mut chunk = Vec::new();
        cursor = t.snapshot_chunk(c, records, &mut chunk);
        out.push(chunk);
    }
    let mut layout = Vec::new();
    if t.layout_chunk(&mut layout) {
        out.push(layout);
    }
    out
}

/// Every table a checkpoint carries of `from` (`state_tables`, each
/// whole), installed into `to` after its state was forgotten.
fn checkpointed(from: &Router<RustLpm>, to: &mut Router<RustLpm>) {
    let chunks: Vec<Vec<u8>> = from.state_tables().iter().flat_map(|t| whole(*t, 32)).collect();
    to.clear_state();
    for c in &chunks {
        to.install_state(c).expect("a chunk installs");
    }
}

/// A router's rate limiters and held packets are part of what a checkpoint
/// carries: a copy made while the ICMP errors' budget was spent and a
/// packet waited for its next hop refuses the same errors and sends the
/// held packet at the answer, as the original does.
#[test]
fn a_checkpointed_router_spends_the_same_error_budget_and_releases_the_same_held_packet() {
    let mut a = router(false);
    let ttl1 = one("udp_ttl1");
    for _ in 0..99 {
        run(&mut a, &ttl1, Side::Inside, 5 * SEC);
    }
    let (v, _) = run(&mut a, &one("echo_client_to_server"), Side::Inside, 5 * SEC);
    assert_eq!(v, Verdict::Forward(Side::Outside), "held; its ARP request went");
    let mut b = router(false);
    checkpointed(&a, &mut b);
    assert_eq!(a.audit_digest(0, 4), b.audit_digest(0, 4));
    let next = |r: &mut Router<RustLpm>| -> Vec<(Verdict, Vec<u8>)> {
        let mut out: Vec<_> = (0..3).map(|_| run(r, &ttl1, Side::Inside, 5 * SEC)).collect();
        out.push(run(r, &one("arp_reply_from_server"), Side::Outside, 5 * SEC + 1));
        out
    };
    let (on_a, on_b) = (next(&mut a), next(&mut b));
    assert_eq!(on_b, on_a);
    let verdicts: Vec<Verdict> = on_b.iter().map(|(v, _)| *v).collect();
    assert_eq!(
        verdicts,
        [
            Verdict::Replaced {
                out: Side::Inside,
                dropped: DropReason::TtlExpired
            },
            Verdict::Drop(DropReason::RateLimited),
            Verdict::Drop(DropReason::RateLimited),
            Verdict::Forward(Side::Outside),
        ],
        "the last error of the second, then none; the held echo leaves at the answer"
    );
    assert_eq!(on_b[3].1, one("expect_echo_forwarded"));
    // Without them a copy would have sent three errors, and nothing at
    // the answer.
    let mut c = router(false);
    let tables_without: Vec<Verdict> = next(&mut c).iter().map(|(v, _)| *v).collect();
    assert_ne!(tables_without, verdicts);
}

#[test]
fn malformed_frames_are_dropped_by_reason() {
    let mut r = router(false);
    for (name, reason) in [
        ("bad_ip_checksum", DropReason::BadChecksum),
        ("bad_ihl", DropReason::Malformed),
        ("truncated_ip", DropReason::Truncated),
        ("not_for_us", DropReason::NotForUs),
    ] {
        assert_eq!(
            run(&mut r, &one(name), Side::Inside, 0).0,
            Verdict::Drop(reason),
            "{name}"
        );
    }
}

#[test]
fn nat_translates_a_tcp_syn_out_and_its_syn_ack_back_preserving_the_port() {
    let mut r = router_knowing_server(true);
    run(&mut r, &one("arp_who_has_gw"), Side::Inside, 0);
    let (v, out) = run(&mut r, &one("nat_syn_out"), Side::Inside, SEC);
    assert_eq!(v, Verdict::Forward(Side::Outside));
    assert_eq!(out, one("expect_nat_syn_out"));
    let (v, back) = run(&mut r, &one("nat_synack_in"), Side::Outside, SEC + 1000);
    assert_eq!(v, Verdict::Forward(Side::Inside));
    assert_eq!(back, one("expect_nat_synack_in"));
    assert_eq!(r.nat().unwrap().len(), 1);
}

#[test]
fn nat_translates_udp_and_icmp_echo_both_ways() {
    let mut r = router_knowing_server(true);
    run(&mut r, &one("arp_who_has_gw"), Side::Inside, 0);
    for (out_name, in_name) in [("nat_udp_out", "nat_udp_in"), ("nat_echo_out", "nat_echo_in")] {
        let (v, out) = run(&mut r, &one(out_name), Side::Inside, SEC);
        assert_eq!(v, Verdict::Forward(Side::Outside), "{out_name}");
        assert_eq!(out, one(&format!("expect_{out_name}")), "{out_name}");
        let (v, back) = run(&mut r, &one(in_name), Side::Outside, SEC + 1);
        assert_eq!(v, Verdict::Forward(Side::Inside), "{in_name}");
        assert_eq!(back, one(&format!("expect_{in_name}")), "{in_name}");
    }
}

#[test]
fn nat_translates_icmp_errors_about_its_sessions_quote_included() {
    let mut r = router_knowing_server(true);
    run(&mut r, &one("arp_who_has_gw"), Side::Inside, 0);
    for out_name in ["nat_udp_out", "nat_syn_out", "nat_echo_out"] {
        let (v, _) = run(&mut r, &one(out_name), Side::Inside, SEC);
        assert_eq!(v, Verdict::Forward(Side::Outside), "{out_name}");
    }
    let sessions = r.nat().unwrap().len();
    // Frag-needed (UDP quote of 8 bytes, TCP quote with the checksum) and
    // time-exceeded (echo) from a hop beyond the server, back to the client.
    for name in [
        "nat_frag_needed_udp_in",
        "nat_frag_needed_tcp_in",
        "nat_time_exceeded_echo_in",
    ] {
        let (v, back) = run(&mut r, &one(name), Side::Outside, SEC + 1);
        assert_eq!(v, Verdict::Forward(Side::Inside), "{name}");
        assert_eq!(back, one(&format!("expect_{name}")), "{name}");
    }
    // The client's port-unreachable about the server's UDP reply, out.
    run(&mut r, &one("nat_udp_in"), Side::Outside, SEC + 2);
    let (v, out) = run(&mut r, &one("nat_port_unreachable_out"), Side::Inside, SEC + 3);
    assert_eq!(v, Verdict::Forward(Side::Outside));
    assert_eq!(out, one("expect_nat_port_unreachable_out"));
    assert_eq!(r.nat().unwrap().len(), sessions, "errors create no session");
}

#[test]
fn nat_drops_icmp_errors_about_no_session_or_with_a_bad_checksum() {
    let mut r = router_knowing_server(true);
    run(&mut r, &one("arp_who_has_gw"), Side::Inside, 0);
    run(&mut r, &one("nat_udp_out"), Side::Inside, SEC);
    assert_eq!(
        run(&mut r, &one("nat_frag_needed_no_session"), Side::Outside, SEC).0,
        Verdict::Drop(DropReason::NoSession)
    );
    let mut bad = one("nat_frag_needed_udp_in");
    let last = bad.len() - 1;
    bad[last] ^= 0x40; // inside the quote: the ICMP checksum no longer verifies
    assert_eq!(
        run(&mut r, &bad, Side::Outside, SEC).0,
        Verdict::Drop(DropReason::BadChecksum)
    );
}

#[test]
fn an_icmp_error_does_not_keep_its_session_alive() {
    let mut r = router_knowing_server(true);
    run(&mut r, &one("arp_who_has_gw"), Side::Inside, 0);
    run(&mut r, &one("nat_udp_out"), Side::Inside, SEC);
    // Errors keep coming for longer than the UDP timeout (300 s)...
    for t in [100, 200, 290] {
        let (v, _) = run(&mut r, &one("nat_frag_needed_udp_in"), Side::Outside, t * SEC);
        assert_eq!(v, Verdict::Forward(Side::Inside), "at {t} s");
    }
    // ...yet the session expires 300 s after its last real packet.
    assert_eq!(
        run(&mut r, &one("nat_frag_needed_udp_in"), Side::Outside, 302 * SEC).0,
        Verdict::Drop(DropReason::NoSession)
    );
}

#[test]
fn nat_drops_what_matches_no_session() {
    let mut r = router_knowing_server(true);
    assert_eq!(
        run(&mut r, &one("nat_udp_unsolicited"), Side::Outside, 0).0,
        Verdict::Drop(DropReason::NoSession)
    );
    assert_eq!(
        run(&mut r, &one("nat_ack_without_session"), Side::Inside, 0).0,
        Verdict::Drop(DropReason::NoSession)
    );
}

#[test]
fn an_idle_udp_session_expires_on_replicated_time() {
    let mut r = router_knowing_server(true);
    run(&mut r, &one("arp_who_has_gw"), Side::Inside, 0);
    run(&mut r, &one("nat_udp_out"), Side::Inside, SEC);
    assert_eq!(
        run(&mut r, &one("nat_udp_in"), Side::Outside, 300 * SEC).0,
        Verdict::Forward(Side::Inside)
    );
    // 300 s after the last packet (the reply refreshed it at t = 300 s).
    assert_eq!(
        run(&mut r, &one("nat_udp_in"), Side::Outside, 601 * SEC).0,
        Verdict::Drop(DropReason::NoSession)
    );
}

/// A frame from client `c` (10.10.1.c) port `p` to the server, proto UDP.
fn udp_from(c: u8, p: u16, now_id: u16) -> Vec<u8> {
    let mut f = one("nat_udp_out");
    f[29] = c; // source address, last byte
    f[34..36].copy_from_slice(&p.to_be_bytes());
    f[18..20].copy_from_slice(&now_id.to_be_bytes());
    // Recompute the IP header checksum; zero the UDP checksum (allowed).
    f[24..26].copy_from_slice(&[0, 0]);
    let c = dataplane::wire::checksum::checksum(&f[14..34]);
    f[24..26].copy_from_slice(&c.to_be_bytes());
    f[40..42].copy_from_slice(&[0, 0]);
    f
}

#[test]
fn a_taken_port_is_replaced_by_a_hash_chosen_one_and_a_full_table_refuses() {
    let cfg = {
        let mut c = (*config(true)).clone();
        if let Some(n) = c.nat.as_mut() {
            n.max_sessions = 3;
        }
        Arc::new(c)
    };
    let mut r = Router::new(cfg.clone(), Arc::new(RustLpm::new(&cfg.routes)));
    run(&mut r, &one("arp_reply_from_server"), Side::Outside, 0);
    for c in [2u8, 3, 4] {
        assert_eq!(
            run(&mut r, &udp_from(c, 50000, 1), Side::Inside, 0).0,
            Verdict::Forward(Side::Outside)
        );
    }
    let ports: Vec<u16> = {
        let nat = r.nat().unwrap();
        [2u8, 3, 4]
            .iter()
            .map(|c| {
                nat.lookup_outbound(
                    17,
                    u32::from(Ipv4Addr::new(10, 10, 1, *c)),
                    50000,
                    u32::from(Ipv4Addr::new(10, 10, 2, 2)),
                    9000,
                )
                .unwrap()
                .ext_port
            })
            .collect()
    };
    // The first keeps its port; the others start from a fixed hash of their
    // session: the same ports on every run, on every node.
    assert_eq!(ports, vec![50000, 14503, 40605]);
    assert_eq!(
        run(&mut r, &udp_from(5, 50000, 1), Side::Inside, 0).0,
        Verdict::Drop(DropReason::TableFull)
    );
}

/// A deterministic mixed workload: TCP opens and closes, UDP, echo, from
/// 50 clients, with replies, over 20 s of packet time.
fn workload() -> Vec<(Side, u64, Vec<u8>)> {
    let syn = one("nat_syn_out");
    let synack = one("nat_synack_in");
    let mut v = Vec::new();
    let mut t = SEC;
    for i in 0..2000u32 {
        let c = 2 + (i % 50) as u8;
        let port = 40000 + (i % 300) as u16;
        t += 10_000_000;
        match i % 4 {
            0 => {
                let mut f = syn.clone();
                f[29] = c;
                f[34..36].copy_from_slice(&port.to_be_bytes());
                fix_tcp(&mut f);
                v.push((Side::Inside, t, f));
            }
            1 => {
                let mut f = synack.clone();
                f[36..38].copy_from_slice(&port.to_be_bytes());
                fix_tcp(&mut f);
                v.push((Side::Outside, t, f));
            }
            2 => v.push((Side::Inside, t, udp_from(c, port, i as u16))),
            _ => v.push((Side::Inside, t, one("nat_echo_out"))),
        }
    }
    v
}

fn fix_tcp(f: &mut [u8]) {
    f[24..26].copy_from_slice(&[0, 0]);
    let c = dataplane::wire::checksum::checksum(&f[14..34]);
    f[24..26].copy_from_slice(&c.to_be_bytes());
    let src: [u8; 4] = f[26..30].try_into().unwrap();
    let dst: [u8; 4] = f[30..34].try_into().unwrap();
    dataplane::wire::tcp::TcpPacket::new_unchecked(&mut f[34..]).fill_checksum(src, dst);
}

fn snapshot(r: &Router<RustLpm>) -> Vec<u8> {
    let mut out = Vec::new();
    let mut cursor = Some(0);
    while let Some(c) = cursor {
        cursor = r.nat().unwrap().snapshot_chunk(c, 100, &mut out);
    }
    r.neighbors.snapshot_chunk(0, usize::MAX, &mut out);
    out
}

#[test]
fn two_nats_fed_the_same_packets_end_in_byte_identical_state() {
    let (mut a, mut b) = (router_knowing_server(true), router_knowing_server(true));
    let mut outputs = (Vec::new(), Vec::new());
    for (side, t, f) in workload() {
        outputs.0.push(run(&mut a, &f, side, t));
        outputs.1.push(run(&mut b, &f, side, t));
    }
    assert_eq!(outputs.0, outputs.1, "same verdicts and bytes");
    assert!(a.nat().unwrap().len() > 100);
    assert_eq!(snapshot(&a), snapshot(&b));
    for slice in 0..8 {
        assert_eq!(a.nat().unwrap().digest(slice, 8), b.nat().unwrap().digest(slice, 8));
    }
}

#[test]
fn a_snapshot_installed_elsewhere_reproduces_the_state_and_deltas_follow_changes() {
    let mut a = router_knowing_server(true);
    let w = workload();
    let (first, rest) = w.split_at(1000);
    for (side, t, f) in first {
        run(&mut a, f, *side, *t);
    }
    let mut b = router_knowing_server(true);
    let mut snap = Vec::new();
    let mut cursor = Some(0);
    while let Some(c) = cursor {
        let start = snap.len();
        cursor = a.nat().unwrap().snapshot_chunk(c, 64, &mut snap);
        b.nat_mut().unwrap().install_chunk(&snap[start..]).unwrap();
    }
    let digests = |r: &Router<RustLpm>| (0..4).map(|s| r.nat().unwrap().digest(s, 4)).collect::<Vec<_>>();
    assert_eq!(digests(&a), digests(&b), "installed copy matches");
    let mark = a.nat().unwrap().generation();
    for (side, t, f) in rest {
        run(&mut a, f, *side, *t);
    }
    let mut delta = Vec::new();
    let n = a
        .nat()
        .unwrap()
        .changed_since(mark, &mut delta)
        .expect("every deletion is in the log");
    assert!(n > 0);
    b.nat_mut().unwrap().install_chunk(&delta).unwrap();
    assert_eq!(digests(&a), digests(&b), "delta applied");
    assert_eq!(a.nat().unwrap().len(), b.nat().unwrap().len());
}

#[test]
fn a_corrupt_state_chunk_is_refused_with_a_reason() {
    let mut r = router(true);
    let nat = r.nat_mut().unwrap();
    assert!(nat.install_chunk(b"LSST").is_err());
    assert!(nat.install_chunk(b"XXXX\0\x01\x01\0\0\0\0").is_err());
    assert!(nat.install_chunk(b"LSST\0\x09\x01\0\0\0\0").is_err());
    assert!(
        nat.install_chunk(b"LSST\0\x01\x01\0\0\0\x05").is_err(),
        "count beyond the body"
    );
}

#[test]
fn a_session_record_of_a_protocol_the_nat_keeps_no_sessions_of_is_rejected() {
    use dataplane::nf::state::{StateError, CHUNK_HEADER};
    let mut a = router_knowing_server(true);
    for (side, t, f) in workload().iter().take(20) {
        run(&mut a, f, *side, *t);
    }
    let mut chunk = Vec::new();
    a.nat().unwrap().snapshot_chunk(0, 1, &mut chunk);
    // The record's first byte after its slot is its protocol.
    for bad in [0u8, 47] {
        let mut c = chunk.clone();
        c[CHUNK_HEADER + 4] = bad;
        let mut b = router_knowing_server(true);
        assert_eq!(
            b.nat_mut().unwrap().install_chunk(&c),
            Err(StateError::Rejected),
            "protocol {bad}"
        );
        assert_eq!(b.nat().unwrap().len(), 0, "protocol {bad}: nothing installed");
    }
    let mut b = router_knowing_server(true);
    assert_eq!(b.nat_mut().unwrap().install_chunk(&chunk), Ok(1));
    assert_eq!(b.nat().unwrap().len(), 1);
}

/// Version 1 records (no slot) still install, into free slots, and a
/// record that would take another session's outside port is refused.
#[test]
fn a_refused_version_1_session_record_leaves_the_session_it_would_have_replaced() {
    use dataplane::nf::nat::SESSION_RECORD;
    use dataplane::nf::state::{StateError, CHUNK_HEADER};
    let mut r = router_knowing_server(true);
    // Two UDP sessions to the same server port.
    run(&mut r, &udp_from(2, 40000, 1), Side::Inside, SEC);
    run(&mut r, &udp_from(3, 40001, 2), Side::Inside, SEC);
    let before: Vec<_> = r.nat().unwrap().sessions().copied().collect();
    assert_eq!(before.len(), 2);
    let mut snap = Vec::new();
    r.nat().unwrap().snapshot_chunk(0, 2, &mut snap);
    // Version 1's record: version 2's without its slot.
    let record = |i: usize| snap[CHUNK_HEADER + i * SESSION_RECORD + 4..][..SESSION_RECORD - 4].to_vec();
    let one_record = |rec: &[u8]| {
        let mut c = snap[..CHUNK_HEADER].to_vec();
        c[4..6].copy_from_slice(&1u16.to_be_bytes());
        c[7..11].copy_from_slice(&1u32.to_be_bytes());
        c.extend_from_slice(rec);
        c
    };
    // The first session again, moved onto the second's outside port.
    let mut clash = record(0);
    clash[13..15].copy_from_slice(&record(1)[13..15]);
    let nat = r.nat_mut().unwrap();
    assert_eq!(nat.install_chunk(&one_record(&clash)), Err(StateError::Rejected));
    assert_eq!(nat.sessions().copied().collect::<Vec<_>>(), before, "nothing changed");
    // Onto a free port it replaces the first session.
    let mut moved = record(0);
    moved[13..15].copy_from_slice(&60000u16.to_be_bytes());
    assert_eq!(nat.install_chunk(&one_record(&moved)), Ok(1));
    let mut ports: Vec<u16> = nat.sessions().map(|s| s.ext_port).collect();
    ports.sort();
    assert_eq!(ports, vec![before[1].ext_port, 60000]);
}

/// Records of a router's NAT with two UDP sessions (slots 0 and 1).
fn two_session_records() -> (Router<RustLpm>, Vec<u8>) {
    let mut r = router_knowing_server(true);
    run(&mut r, &udp_from(2, 40000, 1), Side::Inside, SEC);
    run(&mut r, &udp_from(3, 40001, 2), Side::Inside, SEC);
    let mut snap = Vec::new();
    assert_eq!(r.nat().unwrap().snapshot_chunk(0, 2, &mut snap), None);
    (r, snap)
}

/// One record of `snap` as a chunk of its own, changed by `edit`.
fn one_record_of(snap: &[u8], i: usize, edit: impl Fn(&mut [u8])) -> Vec<u8> {
    use dataplane::nf::nat::SESSION_RECORD;
    use dataplane::nf::state::CHUNK_HEADER;
    let mut c = snap[..CHUNK_HEADER].to_vec();
    c[7..11].copy_from_slice(&1u32.to_be_bytes());
    let mut rec = snap[CHUNK_HEADER + i * SESSION_RECORD..][..SESSION_RECORD].to_vec();
    edit(&mut rec);
    c.extend_from_slice(&rec);
    c
}

/// A checkpointed session is the primary's word on its slot and its keys:
/// what held either here is gone there, and goes.
#[test]
fn a_placed_session_record_takes_its_slot_and_keys_from_whatever_held_them() {
    let (mut r, snap) = two_session_records();
    let before: Vec<_> = r.nat().unwrap().sessions().copied().collect();
    let nat = r.nat_mut().unwrap();
    // The first session, in the second's slot, with the second's port.
    let moved = one_record_of(&snap, 0, |rec| {
        rec[..4].copy_from_slice(&1u32.to_be_bytes());
        rec[17..19].copy_from_slice(&before[1].ext_port.to_be_bytes());
    });
    assert_eq!(nat.install_chunk(&moved), Ok(1));
    let after: Vec<_> = nat.sessions().copied().collect();
    assert_eq!(after.len(), 1, "both others gone");
    assert_eq!(
        (after[0].inside_ip, after[0].ext_port),
        (before[0].inside_ip, before[1].ext_port)
    );
    let mut layout = Vec::new();
    assert!(nat.layout_chunk(&mut layout));
    assert_eq!(
        &layout[11..],
        &[0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0][..],
        "slab of 2, sweep at 0, slot 0 free"
    );
}

#[test]
fn a_session_record_for_a_slot_past_the_table_limit_is_refused_and_changes_nothing() {
    use dataplane::nf::state::StateError;
    let (mut r, snap) = two_session_records();
    let before: Vec<_> = r.nat().unwrap().sessions().copied().collect();
    let nat = r.nat_mut().unwrap();
    let far = one_record_of(&snap, 0, |rec| rec[..4].copy_from_slice(&65536u32.to_be_bytes()));
    assert_eq!(nat.install_chunk(&far), Err(StateError::Rejected));
    assert_eq!(nat.sessions().copied().collect::<Vec<_>>(), before);
}

/// A layout must fit the sessions installed before it: any free slot
/// that holds a session, is listed twice or lies past the length, an
/// empty slot not listed, or a session past the length is refused, and
/// the table is left as it was.
#[test]
fn a_layout_that_does_not_fit_the_installed_sessions_is_refused_and_changes_nothing() {
    use dataplane::nf::state::{StateError, StateKind, MAGIC, VERSION};
    let (mut r, _) = two_session_records();
    let nat = r.nat_mut().unwrap();
    // Slots 0 and 1 hold sessions; slot 2 and 3 are made free by a layout.
    let layout = |words: &[u32]| {
        let mut c = MAGIC.to_vec();
        c.extend_from_slice(&VERSION.to_be_bytes());
        c.push(StateKind::NatLayout as u8);
        c.extend_from_slice(&(words.len() as u32).to_be_bytes());
        for w in words {
            c.extend_from_slice(&w.to_be_bytes());
        }
        c
    };
    let mut good = Vec::new();
    nat.layout_chunk(&mut good);
    for (bad, why) in [
        (layout(&[4, 0, 3]), "slot 2 empty, not listed"),
        (layout(&[4, 0, 3, 2, 1]), "slot 1 holds a session"),
        (layout(&[4, 0, 3, 2, 3]), "slot 3 twice"),
        (layout(&[4, 0, 3, 2, 4]), "slot 4 past the length"),
        (layout(&[1, 0]), "a session past the length"),
        (layout(&[4]), "no sweep"),
    ] {
        assert!(nat.install_chunk(&bad).is_err(), "{why}");
        let mut now = Vec::new();
        nat.layout_chunk(&mut now);
        assert_eq!(now, good, "{why}: nothing changed");
    }
    assert_eq!(nat.install_chunk(&layout(&[4, 1, 3, 2])), Ok(4));
    let mut now = Vec::new();
    nat.layout_chunk(&mut now);
    assert_eq!(now, layout(&[4, 1, 3, 2]), "installed as given");
    assert_eq!(
        nat.install_chunk(&layout(&[4, 1, 3, 2])[..14]),
        Err(StateError::Truncated)
    );
}

#[test]
fn the_rust_lpm_and_route_parsing_agree_on_a_default_route() {
    let cfg = config(false);
    let mut routes = cfg.routes.clone();
    routes.push(Route {
        prefix: Ipv4Addr::UNSPECIFIED,
        len: 0,
        side: Side::Outside,
        via: Some(Ipv4Addr::new(10, 10, 2, 254)),
    });
    let lpm = RustLpm::new(&routes);
    use dataplane::nf::route::RouteLookup;
    assert_eq!(lpm.lookup(u32::from(Ipv4Addr::new(192, 0, 2, 9))), Some(2));
    assert_eq!(lpm.lookup(u32::from(Ipv4Addr::new(10, 10, 1, 9))), Some(0));
}

// ---- Several shards ----

use dataplane::nf::nat::{Nat, SESSION_RECORD};
use dataplane::nf::state::CHUNK_HEADER;
use dataplane::nf::Owner;

fn nat_config(lo: u16, hi: u16) -> NatConfig {
    NatConfig {
        address: u32::from(Ipv4Addr::new(10, 10, 2, 1)),
        port_lo: lo,
        port_hi: hi,
        max_sessions: 16,
        timeouts: Timeouts::default(),
    }
}

#[test]
fn shards_cut_the_port_range_into_disjoint_blocks_that_cover_it() {
    for (lo, hi, shards) in [
        (1024, 65535, 1),
        (1024, 65535, 2),
        (1024, 65535, 3),
        (5000, 5001, 2),
        (5000, 5006, 3),
    ] {
        let cfg = nat_config(lo, hi);
        let nats: Vec<Nat> = (0..shards).map(|k| Nat::new(cfg).for_shard(k, shards)).collect();
        let mut next = lo as u32;
        for (k, n) in nats.iter().enumerate() {
            let (a, b) = n.port_block(k as u16);
            assert_eq!(
                a as u32,
                next,
                "{lo}-{hi}/{shards}: block {k} starts where {} ended",
                k as i32 - 1
            );
            for p in [a, b] {
                assert_eq!(nats[0].shard_of_port(p), Some(k as u16), "port {p}");
            }
            next = b as u32 + 1;
        }
        assert_eq!(
            next,
            hi as u32 + 1,
            "{lo}-{hi}/{shards}: the blocks end at the range's end"
        );
        assert_eq!(nats[0].shard_of_port(lo - 1), None);
    }
}

#[test]
fn a_shard_allocates_ports_from_its_own_block_only() {
    let cfg = config(true);
    let mut r = Router::new(cfg.clone(), Arc::new(RustLpm::new(&cfg.routes))).for_shard(1, 2);
    run(&mut r, &one("arp_reply_from_server"), Side::Outside, 0);
    // Shard 1 of 2 owns 33280..=65535: 50000 is kept, 5000 is not.
    for (client, port) in [(2u8, 50000u16), (3, 5000)] {
        assert_eq!(
            run(&mut r, &udp_from(client, port, 1), Side::Inside, 0).0,
            Verdict::Forward(Side::Outside)
        );
    }
    let ext = |c: u8, p: u16| {
        r.nat()
            .unwrap()
            .lookup_outbound(
                17,
                u32::from(Ipv4Addr::new(10, 10, 1, c)),
                p,
                u32::from(Ipv4Addr::new(10, 10, 2, 2)),
                9000,
            )
            .unwrap()
            .ext_port
    };
    assert_eq!(ext(2, 50000), 50000);
    assert!((33280..=65535).contains(&ext(3, 5000)), "got {}", ext(3, 5000));
}

#[test]
fn a_reply_belongs_to_the_shard_whose_block_holds_its_port_or_quoted_port() {
    let cfg = config(true);
    let r = Router::new(cfg.clone(), Arc::new(RustLpm::new(&cfg.routes))).for_shard(0, 2);
    for (name, owner) in [
        ("nat_udp_in", 1),                // to port 50000
        ("nat_synack_in", 1),             // to port 40000
        ("nat_echo_in", 0),               // echo id 1911
        ("nat_frag_needed_udp_in", 1),    // quoting source port 50000
        ("nat_frag_needed_tcp_in", 1),    // quoting source port 40000
        ("nat_time_exceeded_echo_in", 0), // quoting echo id 1911
    ] {
        assert_eq!(r.owner(&one(name), Side::Outside), Owner::Shard(owner), "{name}");
    }
}

#[test]
fn every_shard_sees_arp_and_an_inside_hosts_traffic_and_errors_go_to_the_shard_of_its_address() {
    let cfg = config(true);
    let r = Router::new(cfg.clone(), Arc::new(RustLpm::new(&cfg.routes))).for_shard(0, 2);
    assert_eq!(r.owner(&one("arp_reply_from_server"), Side::Outside), Owner::Every);
    assert_eq!(r.owner(&one("arp_who_has_gw"), Side::Inside), Owner::Every);
    let client = r.nat().unwrap().shard_of_inside(u32::from(Ipv4Addr::new(10, 10, 1, 2)));
    for name in ["nat_udp_out", "nat_syn_out", "nat_echo_out", "nat_port_unreachable_out"] {
        assert_eq!(r.owner(&one(name), Side::Inside), Owner::Shard(client), "{name}");
    }
    // Hosts spread over both shards, the same way on every node.
    let shards: std::collections::BTreeSet<u16> = (1..=20u8)
        .map(|h| r.nat().unwrap().shard_of_inside(u32::from(Ipv4Addr::new(10, 10, 1, h))))
        .collect();
    assert_eq!(shards.len(), 2);
    assert_eq!(
        r.owner(&[0u8; 10], Side::Outside),
        Owner::Here,
        "too short to say: stays"
    );
    let plain = router(false);
    assert_eq!(
        plain.owner(&one("echo_client_to_server"), Side::Inside),
        Owner::Here,
        "a router keeps IPv4 where it lands"
    );
}

#[test]
fn a_copy_of_an_arp_request_teaches_the_asker_and_answers_nothing() {
    let mut r = router(false);
    let mut f = OwnedFrame::from_bytes(&one("arp_who_has_gw"));
    let ctx = PacketCtx {
        copy: true,
        ..PacketCtx::new(Side::Inside, 0)
    };
    assert_eq!(f.with_frame(|fr| r.process(fr, &ctx)), Verdict::Consumed);
    assert_eq!(f.data(), &one("arp_who_has_gw")[..], "untouched");
    assert_eq!(
        r.neighbors.get(u32::from(Ipv4Addr::new(10, 10, 1, 2)), Side::Inside),
        Some(MacAddr([2, 0, 0, 0, 1, 2]))
    );
}

#[test]
fn audit_digests_agree_slice_by_slice_until_one_session_differs() {
    let (mut a, mut b) = (router_knowing_server(true), router_knowing_server(true));
    let w = workload();
    for (side, t, f) in &w[..1000] {
        run(&mut a, f, *side, *t);
        run(&mut b, f, *side, *t);
    }
    let digests = |r: &Router<RustLpm>| (0..64).map(|s| r.audit_digest(s, 64)).collect::<Vec<u64>>();
    assert_eq!(digests(&a), digests(&b));
    // One more packet of an existing session, to one of them only: its last
    // seen time changes in one slice of the slab.
    let (side, t, f) = &w[2];
    run(&mut b, f, *side, t + SEC);
    let (da, db) = (digests(&a), digests(&b));
    assert_eq!(
        da.iter().zip(&db).filter(|(x, y)| x != y).count(),
        1,
        "exactly one slice differs"
    );
}

/// Port pressure with expiry: 40 clients, each from inside port 7000 to
/// the same server port, share a block of 16 external ports; UDP sessions
/// idle out after 2 s and the table holds 12. Client `i % 40` sends every
/// 50 ms (some clients pause, so sessions expire, free ports and slab
/// slots, and are made again elsewhere), 1 000 packets.
fn churn() -> Vec<(u64, Vec<u8>)> {
    (0..1000u32)
        .map(|i| {
            let c = 2 + ((i * 7 + i / 90) % 40) as u8;
            (SEC + i as u64 * 50_000_000, udp_from(c, 7000, i as u16)[14..].to_vec())
        })
        .collect()
}

fn churn_nat() -> Nat {
    let mut cfg = nat_config(5000, 5015);
    cfg.max_sessions = 12;
    cfg.timeouts.udp = 2 * SEC;
    Nat::new(cfg)
}

/// The whole state of `nat` as a checkpoint carries it: every session, then
/// where they lie (slab, free slots, the expiry sweep's place).
fn full_snapshot(nat: &Nat) -> Vec<Vec<u8>> {
    whole(nat, 5)
}

fn translate(nat: &mut Nat, t: u64, ip: &[u8]) -> (Result<(), DropReason>, Vec<u8>) {
    let mut ip = ip.to_vec();
    let r = nat.outbound(&mut ip, t);
    (r, ip)
}

/// Feeds `rest` to both NATs: every verdict and every byte the same, and
/// the same whole state at the end; returns (refused, ports searched) so
/// a caller can check the packets exercised expiry and the port search.
fn translate_alike(a: &mut Nat, b: &mut Nat, rest: &[(u64, Vec<u8>)]) -> (u32, u32) {
    let (mut refused, mut other_port) = (0, 0);
    for (t, ip) in rest {
        let (ra, ba) = translate(a, *t, ip);
        let (rb, bb) = translate(b, *t, ip);
        assert_eq!((&rb, &bb), (&ra, &ba), "t = {t} ns");
        refused += ra.is_err() as u32;
        other_port += (ra.is_ok() && ba[20..22] != ip[20..22]) as u32;
    }
    assert_eq!(full_snapshot(b), full_snapshot(a), "the same state after");
    (refused, other_port)
}

#[test]
fn a_nat_installed_from_a_snapshot_then_translates_exactly_as_its_original() {
    let w = churn();
    let mut a = churn_nat();
    for (t, ip) in &w[..500] {
        let _ = translate(&mut a, *t, ip);
    }
    assert!(a.expired > 20, "sessions expired before the snapshot ({})", a.expired);
    let mut b = churn_nat();
    for chunk in full_snapshot(&a) {
        b.install_chunk(&chunk).expect("a snapshot installs");
    }
    assert_eq!(full_snapshot(&b), full_snapshot(&a), "installed: the same state");
    let (refused, other_port) = translate_alike(&mut a, &mut b, &w[500..]);
    assert!(
        refused > 0 && other_port > 0,
        "the table filled ({refused}) and ports were searched ({other_port})"
    );
}

/// A delta's records, in slot order.
fn records(delta: &[u8]) -> Vec<&[u8]> {
    let mut r: Vec<&[u8]> = delta[CHUNK_HEADER..].chunks(SESSION_RECORD).collect();
    r.sort();
    r
}

#[test]
fn a_delta_from_the_listed_changes_holds_exactly_the_records_a_scan_of_the_slab_finds() {
    let w = churn();
    let mut a = churn_nat();
    for (t, ip) in &w[..300] {
        let _ = translate(&mut a, *t, ip);
    }
    let before = a.generation();
    for (t, ip) in &w[300..400] {
        let _ = translate(&mut a, *t, ip);
    }
    a.track_changes(true);
    let mark = a.generation();
    for (t, ip) in &w[400..800] {
        let _ = translate(&mut a, *t, ip);
    }
    let (mut listed, mut listed_before) = (Vec::new(), Vec::new());
    let n = a
        .changed_since(mark, &mut listed)
        .expect("every deletion is in the log");
    // From before the list began: the slab is scanned.
    let n_before = a.changed_since(before, &mut listed_before).expect("in the log");
    a.track_changes(false);
    let (mut scanned, mut scanned_before) = (Vec::new(), Vec::new());
    assert_eq!(a.changed_since(mark, &mut scanned), Some(n));
    assert_eq!(a.changed_since(before, &mut scanned_before), Some(n_before));
    assert!(
        n > 20 && n_before > n,
        "{n} changed since the mark, {n_before} since before"
    );
    assert_eq!(records(&listed), records(&scanned));
    assert_eq!(listed_before, scanned_before);
}

/// A checkpoint's rounds: a snapshot taken while the NAT keeps working
/// (chunks between packets), then what changed since the snapshot began,
/// then the layout, at one point: from there the copy is the original.
#[test]
fn a_nat_brought_up_to_date_by_a_delta_then_translates_exactly_as_its_original() {
    brought_up_to_date(false);
}

/// The same, the original listing what changes from the mark on (as a
/// primary's NAT does while a checkpoint runs) instead of scanning.
#[test]
fn a_nat_brought_up_to_date_by_a_delta_of_listed_changes_then_translates_exactly_as_its_original() {
    brought_up_to_date(true);
}

fn brought_up_to_date(track: bool) {
    let w = churn();
    let mut a = churn_nat();
    for (t, ip) in &w[..300] {
        let _ = translate(&mut a, *t, ip);
    }
    let mut b = churn_nat();
    a.track_changes(track);
    let mark = a.generation();
    let (mut cursor, mut next) = (Some(0), 300);
    while let Some(c) = cursor {
        let mut chunk = Vec::new();
        cursor = a.snapshot_chunk(c, 2, &mut chunk);
        b.install_chunk(&chunk).expect("a chunk installs");
        for (t, ip) in &w[next..next + 20] {
            let _ = translate(&mut a, *t, ip);
        }
        next += 20;
    }
    // As a checkpoint sends it: in chunks of a few records.
    let mut delta = Vec::new();
    let changed = a
        .changed_since_chunks(mark, 4, &mut delta)
        .expect("every deletion is in the log");
    assert!(changed > 10, "{changed} changed during the snapshot");
    assert_eq!(delta.len(), changed.div_ceil(4), "chunks of 4 records");
    for chunk in &delta {
        b.install_chunk(chunk).expect("the delta installs");
    }
    let mut layout = Vec::new();
    assert!(a.layout_chunk(&mut layout));
    b.install_chunk(&layout).expect("the layout installs");
    assert_eq!(full_snapshot(&b), full_snapshot(&a), "up to date: the same state");
    let (refused, other_port) = translate_alike(&mut a, &mut b, &w[next..]);
    assert!(
        refused > 0 && other_port > 0,
        "{refused} refused, {other_port} searched"
    );
}
