//! Steering between shards on real DPDK: two workers per node, each with
//! its own `net_ring` ports standing in for one RX/TX queue pair of each
//! NIC, so the test chooses which shard a packet arrives on (what a NIC's
//! flow hash would do), and moves replication frames shard by shard.

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam::channel::{unbounded, Sender};

mod common;
use common::{mbuf_of as mbuf, shared_pool as pool, wait, ENC};

use dataplane::dpdk::mempool::DEFAULT_DATA_ROOM;
use dataplane::dpdk::ring::{MbufRing, RingPort};
use dataplane::dpdk::{Mbuf, Mempool};
use dataplane::nf::nat::Nat;
use dataplane::nf::route::RustLpm;
use dataplane::nf::{Router, RouterConfig, Side};
use dataplane::ownership::TxOwnership;
use dataplane::replication::builder::HEADER_DATA_ROOM;
use dataplane::replication::handoff::HandoffLedger;
use dataplane::wire::checksum;
use dataplane::wire::MacAddr;
use dataplane::worker::{
    Announce, Mode, NodeSignals, ReplPath, ReplSettings, ReplSource, Steering, Worker, WorkerCmd, WorkerShared,
};

const VMAC: MacAddr = MacAddr([2, 0, 0x5e, 0, 1, 1]);
const CLIENT_MAC: MacAddr = MacAddr([2, 0, 0, 0, 1, 2]);
const SERVER_MAC: MacAddr = MacAddr([2, 0, 0, 0, 2, 2]);
const CLIENT: [u8; 4] = [10, 10, 1, 2];
const SERVER: [u8; 4] = [10, 10, 2, 2];
const NAT_ADDR: [u8; 4] = [10, 10, 2, 1];

/// The primary audits one slice of a shard's state this often.
const AUDIT_NS: u64 = 2_000_000;

fn router_config() -> Arc<RouterConfig> {
    common::router_config(
        Some(common::nat_config(1024)),
        vec![
            (Ipv4Addr::from(CLIENT), CLIENT_MAC, Side::Inside),
            (Ipv4Addr::from(SERVER), SERVER_MAC, Side::Outside),
        ],
    )
}

/// An Ethernet + IPv4 + UDP frame (UDP checksum 0: none).
fn udp(dst_mac: MacAddr, src_mac: MacAddr, src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16) -> Vec<u8> {
    let mut f = Vec::with_capacity(60);
    f.extend_from_slice(&dst_mac.0);
    f.extend_from_slice(&src_mac.0);
    f.extend_from_slice(&[0x08, 0x00]);
    let total = 20u16 + 8 + 18;
    f.extend_from_slice(&[0x45, 0, (total >> 8) as u8, total as u8, 0, 1, 0, 0, 64, 17, 0, 0]);
    f.extend_from_slice(&src);
    f.extend_from_slice(&dst);
    let c = checksum::checksum(&f[14..34]);
    f[24..26].copy_from_slice(&c.to_be_bytes());
    f.extend_from_slice(&sport.to_be_bytes());
    f.extend_from_slice(&dport.to_be_bytes());
    f.extend_from_slice(&(8u16 + 18).to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(b"lockstep-steering!");
    f
}

/// "Who has 10.10.1.1? Tell `ip`" from `mac`, padded to 60 bytes.
fn arp_request(mac: MacAddr, ip: [u8; 4]) -> Vec<u8> {
    let mut f = Vec::with_capacity(60);
    f.extend_from_slice(&MacAddr::BROADCAST.0);
    f.extend_from_slice(&mac.0);
    f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0x00, 6, 4, 0, 1]);
    f.extend_from_slice(&mac.0);
    f.extend_from_slice(&ip);
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&[10, 10, 1, 1]);
    f.resize(60, 0);
    f
}

struct Shard {
    inside: RingPort,
    outside: RingPort,
    rep: RingPort,
    shared: Arc<WorkerShared>,
    cmd: Sender<WorkerCmd>,
}

/// A node of two shards running `nat`, standalone or replicating.
struct Node {
    shards: Vec<Shard>,
    ownership: Arc<TxOwnership>,
    quit: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

struct Pools {
    pkts: Arc<Mempool>,
    headers: Arc<Mempool>,
    clones: Arc<Mempool>,
}

impl Node {
    fn start(tag: &str, node_id: u32, replicating: bool, pools: &Pools) -> Node {
        let cfg = router_config();
        let lpm = Arc::new(RustLpm::new(&cfg.routes));
        let inboxes: Vec<Arc<MbufRing>> = (0..2)
            .map(|k| Arc::new(MbufRing::new(&format!("{tag}_inbox{k}"), 256).expect("ring")))
            .collect();
        let ownership = Arc::new(TxOwnership::new(2, !replicating));
        let quit = Arc::new(AtomicBool::new(false));
        let signals = Arc::new(NodeSignals::default());
        let handoff = Arc::new(HandoffLedger::new(1024));
        let mut shards = Vec::new();
        let mut threads = Vec::new();
        for k in 0..2u16 {
            let port = |what: &str| common::ring_port(&format!("{tag}{k}_{what}"), Some((256, 256)), 0, &pools.pkts);
            let (inside, outside, rep) = (port("in"), port("out"), port("rep"));
            let shared = WorkerShared::new(k);
            let (tx, rx) = unbounded();
            let repl = replicating.then(|| ReplPath {
                tx: rep.port.tx_queue(0),
                source: ReplSource {
                    rx: rep.port.rx_queue(0),
                    inbox: None,
                },
                steer: Vec::new(),
                handoff: Some(handoff.clone()),
                encap: ENC,
                headers: pools.headers.clone(),
                clones: pools.clones.clone(),
                pool: pools.pkts.clone(),
                settings: ReplSettings {
                    node_id,
                    shadow: 256,
                    window: 256,
                    keepalive_ns: 10_000_000,
                    replay: 0,
                    batch_bytes: 1514,
                    audit_ns: AUDIT_NS,
                    flow_window: 1024,
                    flow_hold_ns: 1_000_000,
                    checkpoint_hold_ns: dataplane::worker::CHECKPOINT_HOLD_NS,
                    announce: Announce::default(),
                },
                signals: signals.clone(),
            });
            let worker = Worker {
                shard: k,
                nf: Router::new(cfg.clone(), lpm.clone()).for_shard(k, 2),
                data: common::data_queues(&inside, &outside),
                burst: 32,
                idle_sleep_us: 50,
                ownership: ownership.clone(),
                shared: shared.clone(),
                quit: quit.clone(),
                repl,
                commands: replicating.then_some(rx),
                steering: Some(Steering {
                    inboxes: inboxes.clone(),
                    pool: pools.pkts.clone(),
                }),
            };
            threads.push(std::thread::spawn(move || worker.run()));
            shards.push(Shard {
                inside,
                outside,
                rep,
                shared,
                cmd: tx,
            });
        }
        Node {
            shards,
            ownership,
            quit,
            threads,
        }
    }

    fn command(&self, c: WorkerCmd, owned: bool) {
        self.ownership.set_all(owned);
        for s in &self.shards {
            s.cmd.send(c).expect("worker listening");
        }
    }

    fn stop(&mut self) {
        self.quit.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            t.join().expect("worker");
        }
    }

    /// Shard `k`'s function state as `show sessions` prints it.
    fn describe(&self, k: usize) -> String {
        let sh = &self.shards[k].shared;
        *sh.description.lock().unwrap() = None;
        sh.describe_request.store(true, Ordering::SeqCst);
        wait("description", || sh.description.lock().unwrap().is_some());
        let d = sh.description.lock().unwrap().take().unwrap_or_default();
        d
    }
}

impl Drop for Node {
    /// The workers stop before the ports they poll are closed.
    fn drop(&mut self) {
        self.stop();
    }
}

fn pools(tag: &str) -> Pools {
    Pools {
        pkts: pool(&format!("{tag}_pkts"), 2047, DEFAULT_DATA_ROOM),
        headers: pool(&format!("{tag}_hdr"), 1023, HEADER_DATA_ROOM),
        clones: pool(&format!("{tag}_cln"), 1023, 0),
    }
}

fn port_at(f: &[u8], off: usize) -> u16 {
    u16::from_be_bytes([f[off], f[off + 1]])
}

/// The shard that holds the client's sessions, and the other one.
fn client_shard() -> (usize, usize) {
    let nat = router_config().nat.map(|c| Nat::new(c).for_shard(0, 2)).expect("nat");
    let s = nat.shard_of_inside(u32::from(Ipv4Addr::from(CLIENT))) as usize;
    (s, 1 - s)
}

/// Shard `k`'s block of external ports (1024..=65535 cut in two).
fn block(k: usize) -> std::ops::RangeInclusive<u16> {
    if k == 0 {
        1024..=33279
    } else {
        33280..=65535
    }
}

#[test]
fn a_session_lives_on_its_hosts_shard_whichever_shard_its_packets_arrive_on() {
    let p = pools("st");
    let n = Node::start("st", 1, false, &p);
    let (s, o) = client_shard();
    // The client's packet arrives on the other shard, which hands it over;
    // its shard allocates from its own block.
    n.shards[o]
        .inside
        .inject(vec![mbuf(&p.pkts, &udp(VMAC, CLIENT_MAC, CLIENT, 50000, SERVER, 9000))]);
    wait("translated out", || n.shards[s].outside.queued() == 1);
    let out = n.shards[s].outside.take_sent(4);
    let ext = port_at(out[0].data(), 34);
    assert!(block(s).contains(&ext), "port {ext} is not in shard {s}'s block");
    assert_eq!(&out[0].data()[26..30], &NAT_ADDR);
    drop(out);

    // The server's reply arrives on the other shard too (the NIC hashed the
    // outside tuple there): handed to the session's shard, translated.
    n.shards[o]
        .outside
        .inject(vec![mbuf(&p.pkts, &udp(VMAC, SERVER_MAC, SERVER, 9000, NAT_ADDR, ext))]);
    wait("translated back", || n.shards[s].inside.queued() == 1);
    let back = n.shards[s].inside.take_sent(4);
    let b = back[0].data();
    assert_eq!(
        (&b[0..6], &b[30..34], port_at(b, 36)),
        (&CLIENT_MAC.0[..], &CLIENT[..], 50000)
    );
    assert_eq!(checksum::checksum(&b[14..34]), 0, "IP checksum verifies");
    drop(back);
    let (cs, co) = (
        n.shards[s].shared.counters.snapshot(),
        n.shards[o].shared.counters.snapshot(),
    );
    assert_eq!((co.steered_out, cs.steered_in), (2, 2));
    assert_eq!(
        (co.tx, co.drops.iter().sum::<u64>()),
        ([0, 0], 0),
        "the other shard sent and dropped nothing"
    );
    assert_eq!((n.shards[o].inside.queued(), n.shards[o].outside.queued()), (0, 0));
}

#[test]
fn an_arp_request_is_answered_once_by_the_shard_it_arrived_on_and_learned_by_every_shard() {
    let p = pools("sa");
    let n = Node::start("sa", 1, false, &p);
    let asker = MacAddr([2, 0, 0, 0, 1, 3]);
    n.shards[1]
        .inside
        .inject(vec![mbuf(&p.pkts, &arp_request(asker, [10, 10, 1, 3]))]);
    wait("the reply", || n.shards[1].inside.queued() == 1);
    wait("the copy learned", || {
        n.shards[0].shared.counters.snapshot().consumed == 1
    });
    assert_eq!(n.shards[0].inside.queued(), 0, "the copy is not answered");
    let reply = n.shards[1].inside.take_sent(4);
    assert_eq!(
        (&reply[0].data()[0..6], &reply[0].data()[20..22]),
        (&asker.0[..], &[0u8, 2][..])
    );
    drop(reply);
    for k in 0..2 {
        assert!(
            n.describe(k).contains("10.10.1.3"),
            "shard {k} learned the asker:\n{}",
            n.describe(k)
        );
    }
}

#[test]
fn steered_packets_replay_on_the_backup_shard_by_shard_and_a_takeover_repeats_none_of_them() {
    let p = pools("sr");
    let (mut pri, mut bak) = pair("sr", &p);
    // The segment delivers each packet to both nodes, on the same shard.
    let both = |k: usize, side: Side, bytes: &[u8]| {
        for node in [&pri, &bak] {
            let port = match side {
                Side::Inside => &node.shards[k].inside,
                Side::Outside => &node.shards[k].outside,
            };
            assert!(port.inject(vec![mbuf(&p.pkts, bytes)]).is_empty());
        }
    };
    // Everything arrives on the shard that does not hold the client's
    // sessions: its packet, the server's reply, and an ARP request.
    let (s, o) = client_shard();
    both(o, Side::Inside, &udp(VMAC, CLIENT_MAC, CLIENT, 50000, SERVER, 9000));
    wait("out", || pri.shards[s].outside.queued() == 1);
    let out = pri.shards[s].outside.take_sent(4);
    let ext = port_at(out[0].data(), 34);
    drop(out);
    both(o, Side::Outside, &udp(VMAC, SERVER_MAC, SERVER, 9000, NAT_ADDR, ext));
    both(
        o,
        Side::Inside,
        &arp_request(MacAddr([2, 0, 0, 0, 1, 3]), [10, 10, 1, 3]),
    );
    wait("back", || pri.shards[s].inside.queued() == 1);
    wait("arp answered", || pri.shards[o].inside.queued() == 1);
    drop(pri.shards[s].inside.take_sent(4));
    drop(pri.shards[o].inside.take_sent(4));

    // Each shard's stream, to the same shard of the backup: shard `o`
    // carries the two handed off and the ARP request (3), shard `s` the
    // two steered in and the ARP copy (3).
    std::thread::sleep(Duration::from_millis(30));
    for k in 0..2 {
        assert_eq!(
            pri.shards[k].shared.repl.last_seq.load(Ordering::Relaxed),
            3,
            "shard {k}"
        );
        let frames = pri.shards[k].rep.take_sent(64);
        assert!(bak.shards[k].rep.inject(frames).is_empty());
    }
    for k in 0..2 {
        wait("backup caught up", || {
            bak.shards[k].shared.repl.last_seq.load(Ordering::Relaxed) == 3
        });
    }
    for k in 0..2 {
        let r = &bak.shards[k].shared.repl;
        assert!(r.synced.load(Ordering::Relaxed), "shard {k} in sync");
        assert_eq!(
            r.window_len.load(Ordering::Relaxed),
            0,
            "shard {k}: every copy retired, the handed-off one too"
        );
        assert_eq!(pri.describe(k), bak.describe(k), "shard {k}: same state on both nodes");
    }
    let (bs, bo) = (
        bak.shards[s].shared.counters.snapshot(),
        bak.shards[o].shared.counters.snapshot(),
    );
    assert_eq!(
        (bs.steered_in, bo.steered_out),
        (3, 2),
        "packet, reply and ARP copy in; packet and reply out"
    );
    assert_eq!(
        bo.drops.iter().sum::<u64>(),
        0,
        "shard {o} did not process what it handed off"
    );

    pri.stop();
    bak.command(WorkerCmd::BecomePrimary { epoch: 2 }, true);
    for k in 0..2 {
        let r = &bak.shards[k].shared.repl;
        wait("takeover", || r.takeover_done_ns.load(Ordering::Relaxed) > 0);
        assert_eq!(r.takeover_unreplicated.load(Ordering::Relaxed), 0, "shard {k}");
    }
    // Nothing is processed a second time: no data egress but what the
    // shadow rings replay (the primary's last tx_done covered it all).
    std::thread::sleep(Duration::from_millis(20));
    for k in 0..2 {
        let sent: Vec<Mbuf> = [&bak.shards[k].inside, &bak.shards[k].outside]
            .iter()
            .flat_map(|port| port.take_sent(16))
            .filter(|m| m.data()[12..14] == [0x08, 0x00])
            .collect();
        assert_eq!(
            sent.len() as u64,
            bak.shards[k].shared.repl.takeover_replayed.load(Ordering::Relaxed),
            "shard {k}"
        );
    }
    bak.stop();
}

/// A primary and a backup of two shards each, in their modes.
fn pair(tag: &str, p: &Pools) -> (Node, Node) {
    let pri = Node::start(&format!("{tag}p"), 1, true, p);
    let bak = Node::start(&format!("{tag}b"), 2, true, p);
    bak.command(
        WorkerCmd::BecomeBackup {
            epoch: 1,
            diverged: false,
        },
        false,
    );
    pri.command(WorkerCmd::BecomePrimary { epoch: 1 }, true);
    wait("primary", || {
        pri.shards.iter().all(|s| s.shared.repl.mode() == Some(Mode::Primary))
    });
    (pri, bak)
}

/// The client's packet and the server's reply, on the client's shard, to
/// both nodes; then `ms` of the primary's streams (AUDITs included) moved
/// to the backup, each frame passed through `tamper` first.
fn traffic_then_streams(p: &Pools, pri: &Node, bak: &Node, ms: u64, mut tamper: impl FnMut(&mut Mbuf)) {
    let (s, _) = client_shard();
    for node in [pri, bak] {
        let port = &node.shards[s].inside;
        port.inject(vec![mbuf(&p.pkts, &udp(VMAC, CLIENT_MAC, CLIENT, 50000, SERVER, 9000))]);
    }
    wait("out", || pri.shards[s].outside.queued() == 1);
    drop(pri.shards[s].outside.take_sent(4));
    let deadline = Instant::now() + Duration::from_millis(ms);
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        for k in 0..2 {
            let mut frames = pri.shards[k].rep.take_sent(256);
            for m in &mut frames {
                tamper(m);
            }
            assert!(bak.shards[k].rep.inject(frames).is_empty());
        }
    }
    std::thread::sleep(Duration::from_millis(20));
}

#[test]
fn the_audits_of_a_faithful_backup_all_match() {
    let p = pools("au");
    let (pri, bak) = pair("au", &p);
    traffic_then_streams(&p, &pri, &bak, 300, |_| {});
    for k in 0..2 {
        let r = &bak.shards[k].shared.repl;
        assert!(
            r.audits.load(Ordering::Relaxed) >= 64,
            "shard {k}: every slice compared"
        );
        assert_eq!(r.audit_mismatches.load(Ordering::Relaxed), 0, "shard {k}");
        assert!(r.synced.load(Ordering::Relaxed), "shard {k}");
    }
}

#[test]
fn a_backup_whose_state_diverged_is_caught_by_an_audit_and_no_longer_counts_as_synchronized() {
    let p = pools("ad");
    let (pri, bak) = pair("ad", &p);
    let (s, o) = client_shard();
    // The replica of the client's packet arrives with another source port
    // (the IP checksum does not cover it; the UDP checksum is off): the
    // backup's session differs from the primary's, and nothing else shows it.
    let mut tampered = 0;
    let from = [CLIENT, SERVER]
        .concat()
        .into_iter()
        .chain(50000u16.to_be_bytes())
        .collect::<Vec<u8>>();
    traffic_then_streams(&p, &pri, &bak, 300, |m| {
        let d = m.data_mut();
        if let Some(i) = d.windows(from.len()).position(|w| w == from) {
            d[i + 9] ^= 1;
            tampered += 1;
        }
    });
    assert_eq!(tampered, 1);
    let (rs, ro) = (&bak.shards[s].shared.repl, &bak.shards[o].shared.repl);
    assert_eq!(rs.gaps.load(Ordering::Relaxed), 0, "no gap: only the audit can tell");
    assert!(rs.audit_mismatches.load(Ordering::Relaxed) >= 1);
    assert!(!rs.synced.load(Ordering::Relaxed), "shard {s} lost its synchronization");
    assert_eq!(ro.audit_mismatches.load(Ordering::Relaxed), 0);
    assert!(ro.synced.load(Ordering::Relaxed), "shard {o} is still in sync");
}

#[test]
fn a_packet_handed_off_but_not_yet_replicated_by_its_owner_is_sent_by_the_new_primary() {
    handed_off_then_the_primary_dies("ho", true);
}

#[test]
fn a_handed_off_packet_the_backup_never_saw_on_its_data_ports_is_still_sent_by_the_new_primary() {
    // Only the primary receives the client's packet (a switch that
    // delivers the virtual MAC's frames to the primary's port alone).
    handed_off_then_the_primary_dies("hn", false);
}

/// The client's packet arrives on the shard that does not own its session
/// (on the backup's data ports too when `backup_sees_it`). Shard o's stream
/// (its HANDED_OFF record) reaches the backup; shard s's (the packet,
/// STEERED) dies with the primary: it was still in the owner's inbox, as
/// far as the backup can tell. The new primary's owner shard must send it,
/// once, with the old primary's translation.
fn handed_off_then_the_primary_dies(tag: &str, backup_sees_it: bool) {
    let p = pools(tag);
    let (mut pri, bak) = pair(tag, &p);
    let (s, o) = client_shard();
    let client = udp(VMAC, CLIENT_MAC, CLIENT, 50000, SERVER, 9000);
    let receivers = if backup_sees_it { vec![&pri, &bak] } else { vec![&pri] };
    for node in receivers {
        assert!(node.shards[o].inside.inject(vec![mbuf(&p.pkts, &client)]).is_empty());
    }
    wait("out", || pri.shards[s].outside.queued() == 1);
    let out = pri.shards[s].outside.take_sent(4);
    let ext = port_at(out[0].data(), 34);
    drop(out);
    std::thread::sleep(Duration::from_millis(30));
    let frames = pri.shards[o].rep.take_sent(64);
    assert!(bak.shards[o].rep.inject(frames).is_empty());
    drop(pri.shards[s].rep.take_sent(64));
    wait("the HANDED_OFF record", || {
        bak.shards[o].shared.counters.snapshot().steered_out == 1
    });
    pri.stop();
    bak.command(WorkerCmd::BecomePrimary { epoch: 2 }, true);
    wait("the parked packet sent", || bak.shards[s].outside.queued() == 1);
    let out = bak.shards[s].outside.take_sent(4);
    let d = out[0].data();
    assert_eq!(
        (&d[26..30], port_at(d, 34), port_at(d, 36)),
        (&NAT_ADDR[..], ext, 9000),
        "the same translation as the old primary's"
    );
    drop(out);
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(bak.shards[o].outside.queued(), 0, "sent once, by its owner");
    assert_eq!(bak.shards[s].outside.queued(), 0);
}
