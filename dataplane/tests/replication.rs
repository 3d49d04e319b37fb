//! Replication on real DPDK, with `net_ring` ports standing in for the NICs:
//! the test moves the primary's replication frames to the backup's
//! replication port itself, so it can read, drop or reorder them.

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

mod common;
use common::{shared_pool as pool, wait, ENC};
use std::time::{Duration, Instant};

use crossbeam::channel::{unbounded, Sender};

use dataplane::dpdk::mempool::DEFAULT_DATA_ROOM;
use dataplane::dpdk::ring::RingPort;
use dataplane::dpdk::{Mbuf, Mempool};
use dataplane::nf::route::RustLpm;
use dataplane::nf::{DropReason, Forward, NetworkFunction, Router, RouterConfig, Side};
use dataplane::ownership::TxOwnership;
use dataplane::replication::builder::{build_data, build_marker, Batch, HEADER_DATA_ROOM};
use dataplane::replication::{FrameType, ReplHeader, ReplicationFrame, ENCAP_LEN, HEADER_LEN};
use dataplane::wire::replication::{ingress, AckBody, AuditBody, BatchRecords, MAX_BATCH_RECORDS, RECORD_HEADER_LEN};
use dataplane::wire::MacAddr;
use dataplane::worker::{
    Abandoned, Announce, Mode, NodeSignals, ReplPath, ReplSettings, ReplSource, Worker, WorkerCmd, WorkerShared,
};

fn port(name: &str, p: &Mempool) -> RingPort {
    common::ring_port(name, Some((1024, 1024)), 0, p)
}

/// A UDP-looking frame of `len` bytes whose bytes 42.. carry `id`.
fn frame(p: &Mempool, len: u16, id: u32) -> Mbuf {
    let mut m = Mbuf::alloc(p).expect("mbuf");
    let d = m.append(len).expect("room");
    for (i, b) in d.iter_mut().enumerate() {
        *b = i as u8;
    }
    d[12] = 0x08;
    d[13] = 0x00;
    d[42..46].copy_from_slice(&id.to_be_bytes());
    m
}

fn id_of(bytes: &[u8]) -> u32 {
    u32::from_be_bytes([bytes[42], bytes[43], bytes[44], bytes[45]])
}

#[test]
fn replica_shares_the_payload_buffer_and_carries_the_bytes_as_received() {
    let pkts = pool("zc_pkts", 255, DEFAULT_DATA_ROOM);
    let headers = pool("zc_hdr", 255, HEADER_DATA_ROOM);
    let clones = pool("zc_cln", 255, 0);
    let mut orig = frame(&pkts, 1000, 7);
    let as_received = orig.data().to_vec();
    let h = ReplHeader {
        shard: 0,
        epoch: 1,
        seq: 5,
        tx_done: 4,
        time_ns: 99,
        ingress: 0,
        length: 1000,
    };
    let replica = build_data(&orig, &h, 54, &ENC, Mbuf::alloc(&headers).unwrap(), &clones).expect("replica");

    assert_eq!(replica.nb_segs(), 2);
    assert_eq!(replica.pkt_len(), ENCAP_LEN + 1000);
    assert_eq!(
        replica.next_segment_buf_addr(),
        Some(orig.buf_addr()),
        "payload shared, not copied"
    );
    assert_eq!(orig.buffer_refcnt(), 2);
    assert_eq!(replica.data_len(), ENCAP_LEN + 54, "only the rewrite span is copied");

    // The function rewrites the original inside its span (as a router would).
    orig.data_mut()[..54].fill(0xee);
    let wire = replica.copy_to_vec();
    assert_eq!(&wire[ENCAP_LEN..], &as_received[..], "replica = frame as received");
    let f = ReplicationFrame::new_checked(&wire[14..]).unwrap();
    assert_eq!(f.frame_type(), FrameType::Data);
    assert_eq!(f.header(), h);

    drop(replica);
    assert_eq!(orig.buffer_refcnt(), 1);
    drop(orig);
    assert_eq!((pkts.in_use(), headers.in_use(), clones.in_use()), (0, 0, 0));
}

#[test]
fn small_packets_are_copied_whole_into_one_segment() {
    let pkts = pool("cp_pkts", 63, DEFAULT_DATA_ROOM);
    let headers = pool("cp_hdr", 63, HEADER_DATA_ROOM);
    let clones = pool("cp_cln", 63, 0);
    let orig = frame(&pkts, 64, 1);
    let h = ReplHeader {
        length: 64,
        ..Default::default()
    };
    let r = build_data(&orig, &h, 94, &ENC, Mbuf::alloc(&headers).unwrap(), &clones).unwrap();
    assert_eq!((r.nb_segs(), r.pkt_len()), (1, ENCAP_LEN + 64));
    assert_eq!(&r.data()[ENCAP_LEN..], orig.data());
    assert_eq!(clones.in_use(), 0);
}

/// A packet of `len` bytes (byte i = i + `salt`) whose buffer holds 0xee
/// in the 300 bytes after its data: what a copy must not carry.
fn stale_after(p: &Mempool, len: u16, salt: u8) -> Mbuf {
    let mut m = Mbuf::alloc(p).expect("mbuf");
    m.append(len + 300).expect("room").fill(0xee);
    for (i, b) in m.data_mut()[..len as usize].iter_mut().enumerate() {
        *b = (i as u8).wrapping_add(salt);
    }
    assert!(m.trim(300));
    m
}

#[test]
fn a_batch_frame_is_exactly_its_records_and_each_record_is_its_packet_as_received() {
    let pkts = pool("ba_pkts", 63, DEFAULT_DATA_ROOM);
    let lens = [1u16, 60, 63, 64, 65, 127, 200, 256];
    let packets: Vec<Mbuf> = lens.iter().map(|&l| stale_after(&pkts, l, l as u8)).collect();
    let h = ReplHeader {
        shard: 2,
        epoch: 3,
        tx_done: 9,
        time_ns: 77,
        ..Default::default()
    };
    let first = ReplHeader { seq: 10, ..h };
    let mut batch = Batch::start(Mbuf::alloc(&pkts).unwrap(), &ENC, 1514, &first).expect("batch");
    assert!(batch.is_empty());
    for (i, m) in packets.iter().enumerate() {
        assert!(batch.append(1, m), "record {i} fits");
    }
    let frame = batch.finish();
    assert_eq!(
        seq_of(&frame),
        (
            FrameType::Batch,
            ReplHeader {
                seq: 10,
                length: 868,
                ..h
            }
        )
    );
    let want: usize = lens.iter().map(|&l| RECORD_HEADER_LEN + l as usize).sum();
    assert_eq!(want, 868);
    assert_eq!(frame.pkt_len(), 14 + HEADER_LEN + want, "no byte after the last record");
    let records = records_of(&frame);
    assert_eq!(records.len(), lens.len());
    for (i, ((t, rh, body), m)) in records.iter().zip(&packets).enumerate() {
        assert_eq!(*t, FrameType::Data);
        let expect = ReplHeader {
            seq: 10 + i as u64,
            ingress: 1,
            length: m.data_len() as u16,
            ..h
        };
        assert_eq!(*rh, expect);
        assert_eq!(&body[..], m.data(), "record {i}: the packet's bytes, none after them");
    }
}

#[test]
fn a_record_that_does_not_fit_leaves_the_batch_as_it_was_and_one_that_just_fits_is_whole() {
    let pkts = pool("bf_pkts", 63, DEFAULT_DATA_ROOM);
    let first = ReplHeader {
        seq: 1,
        ..ReplHeader::default()
    };
    let a = stale_after(&pkts, 60, 1);
    let b = stale_after(&pkts, 61, 2);
    // Room for the headers and exactly one 60-byte record: too little for
    // a copy in whole 64-byte blocks, which must not be tried.
    let room = 14 + HEADER_LEN + RECORD_HEADER_LEN + 60;
    let mut batch = Batch::start(Mbuf::alloc(&pkts).unwrap(), &ENC, room, &first).expect("batch");
    assert!(!batch.append(0, &b), "61 bytes do not fit");
    assert!(batch.is_empty());
    assert!(batch.append(0, &a));
    assert!(!batch.append(0, &a), "full");
    let frame = batch.finish();
    assert_eq!(frame.pkt_len(), room);
    let records = records_of(&frame);
    assert_eq!(records.len(), 1);
    assert_eq!((records[0].1.seq, &records[0].2[..]), (1, a.data()));
}

#[test]
fn a_batch_takes_at_most_max_batch_records_records() {
    let pkts = pool("bm_pkts", 63, DEFAULT_DATA_ROOM);
    let first = ReplHeader {
        seq: 1,
        ..ReplHeader::default()
    };
    let empty = Mbuf::alloc(&pkts).unwrap();
    let mut batch = Batch::start(Mbuf::alloc(&pkts).unwrap(), &ENC, 9014, &first).expect("batch");
    for i in 0..MAX_BATCH_RECORDS {
        assert!(batch.append(0, &empty), "record {i}");
    }
    assert!(!batch.append(0, &empty), "one more than a backup decodes");
    assert_eq!(records_of(&batch.finish()).len(), MAX_BATCH_RECORDS);
}

#[test]
fn copy_data_to_refuses_a_destination_shorter_than_the_packet_and_copies_nothing() {
    let pkts = pool("cd_pkts", 15, DEFAULT_DATA_ROOM);
    let m = stale_after(&pkts, 100, 0);
    let mut short = [0u8; 99];
    assert_eq!(m.copy_data_to(&mut short), None);
    assert_eq!(short, [0u8; 99]);
    let mut exact = [0u8; 100];
    assert_eq!(m.copy_data_to(&mut exact), Some(100));
    assert_eq!(&exact[..], m.data());
}

/// How a test node differs from the default one.
#[derive(Clone, Copy)]
struct Opts {
    /// Slots of the rings the replication port receives from and sends
    /// into.
    rep_rx_slots: u32,
    rep_tx_slots: u32,
    /// Small packets' records are batched up to this (0: one per frame).
    batch_bytes: usize,
    /// Flow control (0: off).
    flow_window: u64,
    flow_hold_ns: u64,
    /// The worker's shard.
    shard: u16,
    /// Shadow ring entries.
    shadow: usize,
    /// The inside port verifies IPv4 header checksums (the test sets the
    /// mbufs' flags, as such a NIC would).
    nic_checksum: bool,
    /// In-band audits (0: none).
    audit_ns: u64,
    /// What a checkpoint's close may hold the data ports.
    checkpoint_hold_ns: u64,
}

impl Default for Opts {
    fn default() -> Opts {
        Opts {
            rep_rx_slots: 1024,
            rep_tx_slots: 1024,
            batch_bytes: 1514,
            flow_window: 0,
            flow_hold_ns: 1_000_000,
            shard: 0,
            shadow: 1024,
            nic_checksum: false,
            audit_ns: 0,
            checkpoint_hold_ns: dataplane::worker::CHECKPOINT_HOLD_NS,
        }
    }
}

struct Node {
    inside: RingPort,
    outside: RingPort,
    rep: RingPort,
    shared: Arc<WorkerShared>,
    cmd: Sender<WorkerCmd>,
    ownership: Arc<TxOwnership>,
    signals: Arc<NodeSignals>,
    quit: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Node {
    fn start(tag: &str, node_id: u32, pkts: &Arc<Mempool>, headers: &Arc<Mempool>, clones: &Arc<Mempool>) -> Node {
        Node::start_with(tag, node_id, pkts, headers, clones, Opts::default())
    }

    fn start_with(
        tag: &str,
        node_id: u32,
        pkts: &Arc<Mempool>,
        headers: &Arc<Mempool>,
        clones: &Arc<Mempool>,
        opts: Opts,
    ) -> Node {
        let signals = Arc::new(NodeSignals::default());
        Node::start_in(tag, node_id, [pkts, headers, clones], opts, signals)
    }

    /// One `forward` worker (shard `opts.shard`) of a node whose workers
    /// share `signals`; `pools`: packets, headers, clones.
    fn start_in(tag: &str, node_id: u32, pools: [&Arc<Mempool>; 3], opts: Opts, signals: Arc<NodeSignals>) -> Node {
        Node::start_nf(tag, node_id, pools, opts, signals, Forward)
    }

    /// [`Node::start_in`] running `nf`.
    fn start_nf<F: NetworkFunction>(
        tag: &str,
        node_id: u32,
        pools: [&Arc<Mempool>; 3],
        opts: Opts,
        signals: Arc<NodeSignals>,
        nf: F,
    ) -> Node {
        let [pkts, headers, clones] = pools;
        let Opts {
            rep_rx_slots,
            rep_tx_slots,
            batch_bytes,
            flow_window,
            flow_hold_ns,
            shard,
            shadow,
            nic_checksum,
            audit_ns,
            checkpoint_hold_ns,
        } = opts;
        let inside = port(&format!("{tag}_in"), pkts);
        let outside = port(&format!("{tag}_out"), pkts);
        let rep = common::ring_port(&format!("{tag}_rep"), Some((rep_rx_slots, rep_tx_slots)), 0, pkts);
        let shared = WorkerShared::new(0);
        let (tx, rx) = unbounded();
        let ownership = Arc::new(TxOwnership::new(shard as usize + 1, false));
        let quit = Arc::new(AtomicBool::new(false));
        let mut data = common::data_queues(&inside, &outside);
        data[Side::Inside.index()].rx_ip_checksum = nic_checksum;
        let worker = Worker {
            shard,
            nf,
            data,
            burst: 32,
            idle_sleep_us: 50,
            ownership: ownership.clone(),
            shared: shared.clone(),
            quit: quit.clone(),
            repl: Some(ReplPath {
                tx: rep.port.tx_queue(0),
                source: ReplSource {
                    rx: rep.port.rx_queue(0),
                    inbox: None,
                },
                steer: Vec::new(),
                handoff: None,
                encap: ENC,
                headers: headers.clone(),
                clones: clones.clone(),
                pool: pkts.clone(),
                settings: ReplSettings {
                    node_id,
                    shadow,
                    window: 1024,
                    keepalive_ns: 10_000_000,
                    replay: 0,
                    batch_bytes,
                    audit_ns,
                    flow_window,
                    flow_hold_ns,
                    checkpoint_hold_ns,
                    announce: Announce {
                        vmac: Some(MacAddr([2, 0, 0x5e, 0, 1, 1])),
                        vips: [Some(Ipv4Addr::new(10, 10, 1, 1)), None],
                    },
                },
                signals: signals.clone(),
            }),
            commands: Some(rx),
            steering: None,
        };
        let thread = Some(std::thread::spawn(move || worker.run()));
        Node {
            inside,
            outside,
            rep,
            shared,
            cmd: tx,
            ownership,
            signals,
            quit,
            thread,
        }
    }

    /// A node of its own (signals not shared) running the router of `cfg`
    /// (a NAT when `cfg.nat` is set).
    fn start_router(tag: &str, node_id: u32, pools: [&Arc<Mempool>; 3], opts: Opts, cfg: &Arc<RouterConfig>) -> Node {
        let router = Router::new(cfg.clone(), Arc::new(RustLpm::new(&cfg.routes)));
        Node::start_nf(tag, node_id, pools, opts, Arc::new(NodeSignals::default()), router)
    }

    fn command(&self, c: WorkerCmd, owned: bool) {
        self.ownership.set_all(owned);
        self.cmd.send(c).unwrap();
    }

    /// Primary of `epoch`, owning its queues, once its worker says so.
    fn become_primary(&self, epoch: u32) {
        self.command(WorkerCmd::BecomePrimary { epoch }, true);
        wait("primary", || self.shared.repl.mode() == Some(Mode::Primary));
    }

    /// A backup of `epoch` that did not diverge, owning nothing.
    fn become_backup(&self, epoch: u32) {
        self.command(WorkerCmd::BecomeBackup { epoch, diverged: false }, false);
    }

    fn stop(&mut self) {
        self.quit.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

/// A test's pools, named after `tag`: `n` packets, and `n / 2` header
/// and clone mbufs.
fn pools(tag: &str, n: u32) -> (Arc<Mempool>, Arc<Mempool>, Arc<Mempool>) {
    (
        pool(&format!("{tag}_pkts"), n, DEFAULT_DATA_ROOM),
        pool(&format!("{tag}_hdr"), n / 2, HEADER_DATA_ROOM),
        pool(&format!("{tag}_cln"), n / 2, 0),
    )
}

/// Packets `ids` of `len` bytes (`frame`) into the primary's inside port;
/// once it forwarded them all, its DATA and BATCH frames so far.
fn replicas_of(p: &Node, pkts: &Mempool, ids: std::ops::RangeInclusive<u32>, len: u16) -> Vec<Mbuf> {
    let tx = || p.shared.counters.snapshot().tx[Side::Outside.index()];
    let until = tx() + ids.clone().count() as u64;
    assert!(p.inside.inject(ids.map(|i| frame(pkts, len, i)).collect()).is_empty());
    wait("forwarded", || tx() == until);
    std::thread::sleep(Duration::from_millis(20));
    data_frames(p.rep.take_sent(64))
}

/// The link between primary `p` and backup `b`, once: `p`'s replication
/// frames to `b` (as a NIC delivers them), `b`'s ACKs to `p`; what `p`
/// sent on its outside port is dropped. Returns the frames `b`'s full RX
/// ring refused (lost, as on a NIC).
fn relay(p: &Node, b: &Node, pkts: &Mempool) -> usize {
    let frames = p.rep.take_sent(256);
    let lost = b.rep.inject(linearized(pkts, frames)).len();
    drop(p.rep.inject(linearized(pkts, b.rep.take_sent(256))));
    drop(p.outside.take_sent(256));
    lost
}

/// A primary (node 1) and a backup (node 2) in their modes.
fn pair(tag: &str, pkts: &Arc<Mempool>, headers: &Arc<Mempool>, clones: &Arc<Mempool>) -> (Node, Node) {
    pair_with(tag, pkts, headers, clones, [Opts::default(); 2])
}

/// [`pair`] with options for each node (primary, backup).
fn pair_with(
    tag: &str,
    pkts: &Arc<Mempool>,
    headers: &Arc<Mempool>,
    clones: &Arc<Mempool>,
    opts: [Opts; 2],
) -> (Node, Node) {
    let p = Node::start_with(&format!("{tag}a"), 1, pkts, headers, clones, opts[0]);
    let b = Node::start_with(&format!("{tag}b"), 2, pkts, headers, clones, opts[1]);
    into_modes(&p, &b);
    (p, b)
}

/// `p` becomes the primary of epoch 1 and `b` its backup.
fn into_modes(p: &Node, b: &Node) {
    b.become_backup(1);
    p.become_primary(1);
}

impl Drop for Node {
    /// The worker stops before the ports it polls are closed.
    fn drop(&mut self) {
        self.stop();
    }
}

/// What a NIC delivers: the frame in one segment.
fn linearized(p: &Mempool, frames: Vec<Mbuf>) -> Vec<Mbuf> {
    frames
        .into_iter()
        .map(|m| {
            let bytes = m.copy_to_vec();
            let mut out = Mbuf::alloc(p).expect("mbuf");
            out.append(bytes.len() as u16).expect("room").copy_from_slice(&bytes);
            out
        })
        .collect()
}

/// Every record of a replication frame (a batch holds several).
fn records_of(m: &Mbuf) -> Vec<(FrameType, ReplHeader, Vec<u8>)> {
    let d = m.copy_to_vec();
    let f = ReplicationFrame::new_checked(&d[14..]).expect("a replication frame");
    let h = f.header();
    if f.frame_type() != FrameType::Batch {
        return vec![(f.frame_type(), h, f.body().to_vec())];
    }
    let mut records = BatchRecords::new(f.body());
    let out = records
        .by_ref()
        .enumerate()
        .map(|(i, r)| {
            let rh = ReplHeader {
                seq: h.seq + i as u64,
                ingress: r.ingress,
                length: r.len as u16,
                ..h
            };
            (FrameType::Data, rh, f.body()[r.start..r.start + r.len].to_vec())
        })
        .collect();
    assert!(records.complete(), "every byte of a batch is in a record");
    out
}

fn seq_of(m: &Mbuf) -> (FrameType, ReplHeader) {
    let d = m.copy_to_vec();
    let f = ReplicationFrame::new_checked(&d[14..]).unwrap();
    (f.frame_type(), f.header())
}

/// The DATA and BATCH frames of `frames` (no keepalive or other marker),
/// in order.
fn data_frames(frames: Vec<Mbuf>) -> Vec<Mbuf> {
    frames
        .into_iter()
        .filter(|m| matches!(seq_of(m).0, FrameType::Data | FrameType::Batch))
        .collect()
}

#[test]
fn primary_replicates_in_order_and_a_backup_takeover_resends_exactly_what_tx_done_had_not_covered() {
    let (pkts, headers, clones) = pools("pb", 4095);
    let (mut p, mut b) = pair("p", &pkts, &headers, &clones);

    // 40 packets of 600 bytes on the primary's inside port.
    let sent: Vec<Mbuf> = (1..=40).map(|i| frame(&pkts, 600, i)).collect();
    assert!(p.inside.inject(sent).is_empty());
    wait("40 forwarded", || {
        p.shared.counters.snapshot().tx[Side::Outside.index()] == 40
    });
    let egress = p.outside.take_sent(64);
    assert_eq!(
        egress.iter().map(|m| id_of(m.data())).collect::<Vec<_>>(),
        (1..=40).collect::<Vec<_>>()
    );
    drop(egress);

    // Its replication frames: DATA 1..=40 in order, then keepalives.
    wait("replicas", || p.rep.queued() >= 40);
    std::thread::sleep(Duration::from_millis(20));
    let frames = p.rep.take_sent(256);
    let data: Vec<(u64, u64)> = frames
        .iter()
        .map(seq_of)
        .filter(|(t, _)| *t == FrameType::Data)
        .map(|(_, h)| (h.seq, h.tx_done))
        .collect();
    assert_eq!(
        data.iter().map(|d| d.0).collect::<Vec<_>>(),
        (1..=40).collect::<Vec<_>>()
    );
    assert!(data.windows(2).all(|w| w[0].1 <= w[1].1), "tx_done never goes back");
    let final_tx_done = frames.iter().map(seq_of).map(|(_, h)| h.tx_done).max().unwrap();
    assert_eq!(final_tx_done, 40, "an idle primary reports its last tx_done at once");

    // The backup gets every DATA frame but not the keepalives: it believes
    // the primary transmitted up to the tx_done of the last DATA frame only.
    let last_data_tx_done = data.last().unwrap().1;
    let only_data = data_frames(frames);
    assert!(b.rep.inject(linearized(&pkts, only_data)).is_empty());
    wait("backup processed 40", || {
        b.shared.repl.last_seq.load(Ordering::Relaxed) == 40
    });
    let st = &b.shared.repl;
    assert!(st.synced.load(Ordering::Relaxed));
    assert_eq!(st.tx_done.load(Ordering::Relaxed), last_data_tx_done);
    assert_eq!(st.shadow_len.load(Ordering::Relaxed), 40 - last_data_tx_done);
    assert!(
        b.outside.take_sent(64).is_empty() && b.inside.take_sent(64).is_empty(),
        "a backup transmits nothing"
    );

    // The primary dies; the backup takes over.
    p.stop();
    b.command(WorkerCmd::BecomePrimary { epoch: 2 }, true);
    wait("takeover", || {
        b.shared.repl.mode() == Some(Mode::Primary) && b.shared.repl.takeover_done_ns.load(Ordering::Relaxed) > 0
    });
    let out = b.outside.take_sent(64);
    let (resent, announced): (Vec<Mbuf>, Vec<Mbuf>) = out.into_iter().partition(|m| m.data()[12..14] == [0x08, 0x00]);
    // The MAC seen behind the inside port is announced on the outside one
    // (RARP, as QEMU does after a migration).
    assert_eq!(announced.len(), 1);
    assert_eq!(&announced[0].data()[6..14], &[6, 7, 8, 9, 10, 11, 0x80, 0x35]);
    drop(announced);
    assert_eq!(
        resent.iter().map(|m| id_of(m.data())).collect::<Vec<_>>(),
        ((last_data_tx_done as u32 + 1)..=40).collect::<Vec<_>>(),
        "exactly the packets after the last tx_done, in order"
    );
    assert_eq!(
        b.shared.repl.takeover_replayed.load(Ordering::Relaxed),
        40 - last_data_tx_done
    );
    drop(resent);
    // The gratuitous ARP for the inside VIP went out on the inside port.
    let garp = b.inside.take_sent(8);
    assert_eq!(garp.len(), 1);
    assert_eq!(&garp[0].data()[12..14], &[0x08, 0x06]);
    drop(garp);

    // New ingress continues the sequence with the new epoch.
    assert!(b.inside.inject(vec![frame(&pkts, 600, 41)]).is_empty());
    wait("41 forwarded", || b.outside.queued() == 1);
    let f = b.rep.take_sent(64);
    let d: Vec<ReplHeader> = f
        .iter()
        .map(seq_of)
        .filter(|(t, _)| *t == FrameType::Data)
        .map(|x| x.1)
        .collect();
    assert_eq!(d.len(), 1);
    assert_eq!((d[0].seq, d[0].epoch), (41, 2));
    drop(f);
    b.stop();
}

/// `frames` (one record each) into `to`'s replication port, all but the one
/// at `at`, whose sequence is `seq`: `to` reaches `last` having counted one
/// gap of one record.
fn deliver_all_but(to: &Node, pkts: &Mempool, mut frames: Vec<Mbuf>, at: usize, seq: u64, last: u64) {
    let lost = frames.remove(at);
    assert_eq!(seq_of(&lost).1.seq, seq);
    drop(lost);
    assert!(to.rep.inject(linearized(pkts, frames)).is_empty());
    wait("the backup at the last", || {
        to.shared.repl.last_seq.load(Ordering::Relaxed) == last
    });
    let st = &to.shared.repl;
    assert_eq!(
        (st.gaps.load(Ordering::Relaxed), st.missing.load(Ordering::Relaxed)),
        (1, 1)
    );
}

/// The idle primary `from`'s next marker (its `tx_done` covers what came
/// before) into `to`, a `forward` backup that rejoined after a gap: it is
/// synchronized again. Returns the sequence it joined at.
fn rejoin_on_next_marker(from: &Node, to: &Node, pkts: &Mempool) -> u64 {
    std::thread::sleep(Duration::from_millis(30));
    assert!(to.rep.inject(linearized(pkts, from.rep.take_sent(64))).is_empty());
    let st = &to.shared.repl;
    wait("synchronized again", || st.synced.load(Ordering::Relaxed));
    st.joined_at.load(Ordering::Relaxed)
}

/// `forward` keeps no state: its backup rejoins at the frame after the gap
/// and is synchronized again once the primary's tx_done covers the lost
/// one (a function with state waits for the primary's checkpoint: the
/// checkpoint tests below).
#[test]
fn a_lost_replication_frame_is_a_counted_gap_and_forward_rejoins_after_it_once_tx_done_covers_it() {
    // 300-byte packets travel one per frame (small ones would be batched).
    let (pkts, headers, clones) = pools("gap", 2047);
    let (mut p, mut b) = pair("g", &pkts, &headers, &clones);
    let frames = replicas_of(&p, &pkts, 1..=10, 300);
    deliver_all_but(&b, &pkts, frames, 4, 5, 10);
    assert!(
        !b.shared.repl.synced.load(Ordering::Relaxed),
        "tx_done 0 covers nothing"
    );
    assert_eq!(rejoin_on_next_marker(&p, &b, &pkts), 6);
    p.stop();
    b.stop();
}

/// A `forward` primary that hands over at a sequence boundary follows the
/// new primary from there; a later gap is rejoined, as on any `forward`
/// backup (its tracker is rebuilt at the boundary, still joinable).
#[test]
fn a_forward_primary_that_handed_over_rejoins_after_a_gap_in_the_new_primarys_stream() {
    let (pkts, headers, clones) = pools("ho", 2047);
    let (a, b) = pair("ho", &pkts, &headers, &clones);
    let frames = replicas_of(&a, &pkts, 1..=5, 300);
    assert!(b.rep.inject(linearized(&pkts, frames)).is_empty());
    wait("backup at 5", || b.shared.repl.last_seq.load(Ordering::Relaxed) == 5);
    a.become_backup(2);
    wait("a is a backup", || a.shared.repl.mode() == Some(Mode::Backup));
    b.command(WorkerCmd::BecomePrimary { epoch: 2 }, true);
    wait("b is the primary", || b.shared.repl.mode() == Some(Mode::Primary));
    let _ = a.rep.take_sent(64);
    let frames = replicas_of(&b, &pkts, 6..=10, 300);
    deliver_all_but(&a, &pkts, frames, 2, 8, 10);
    assert_eq!(rejoin_on_next_marker(&b, &a, &pkts), 9);
}

#[test]
fn a_batch_whose_third_record_runs_past_its_body_gives_two_records_a_malformed_count_and_a_gap() {
    let (pkts, headers, clones) = pools("tb", 2047);
    let (mut p, mut b) = pair("tb", &pkts, &headers, &clones);
    let mut frames = replicas_of(&p, &pkts, 1..=3, 64);
    assert_eq!(frames.len(), 1);
    assert_eq!(records_of(&frames[0]).len(), 3);
    // The third record's length field (after Ethernet, BATCH header and two
    // 68-byte records) claims one byte more than the body holds.
    let at = 14 + HEADER_LEN + 2 * (RECORD_HEADER_LEN + 64) + 2;
    frames[0].data_mut()[at..at + 2].copy_from_slice(&65u16.to_be_bytes());
    assert!(b.rep.inject(linearized(&pkts, frames)).is_empty());
    wait("backup at 2", || b.shared.repl.last_seq.load(Ordering::Relaxed) == 2);
    std::thread::sleep(Duration::from_millis(20));
    let st = &b.shared.repl;
    assert_eq!(st.malformed.load(Ordering::Relaxed), 1);
    assert_eq!(st.last_seq.load(Ordering::Relaxed), 2, "the two whole records only");
    assert_eq!(
        st.gaps.load(Ordering::Relaxed),
        0,
        "no gap until the next sequence comes"
    );
    // The next packet's replica (sequence 4) shows the gap.
    let frames = replicas_of(&p, &pkts, 4..=4, 64);
    assert!(b.rep.inject(linearized(&pkts, frames)).is_empty());
    wait("backup at 4", || b.shared.repl.last_seq.load(Ordering::Relaxed) == 4);
    assert_eq!(
        (st.gaps.load(Ordering::Relaxed), st.missing.load(Ordering::Relaxed)),
        (1, 1)
    );
    // forward rejoins at 4: the primary transmitted the lost record's packet.
    wait("synchronized again", || st.synced.load(Ordering::Relaxed));
    assert_eq!(st.joined_at.load(Ordering::Relaxed), 4);
    p.stop();
    b.stop();
}

#[test]
fn a_refused_replica_means_the_packet_is_never_processed_and_its_sequence_is_reused() {
    let (pkts, headers, clones) = pools("oc", 2047);
    // The replication port sends into 16 slots (15 usable), one frame per
    // packet.
    let p = Node::start_with(
        "oc",
        1,
        &pkts,
        &headers,
        &clones,
        Opts {
            rep_tx_slots: 16,
            batch_bytes: 0,
            ..Opts::default()
        },
    );
    p.become_primary(1);
    let (shared, tiny) = (p.shared.clone(), &p.rep);
    // Drain the takeover keepalive so the ring has its 15 slots.
    std::thread::sleep(Duration::from_millis(20));
    drop(tiny.take_sent(16));
    assert!(p
        .inside
        .inject((1..=20).map(|i| frame(&pkts, 100, i)).collect())
        .is_empty());
    wait("20 received", || shared.counters.snapshot().rx[0] == 20);
    std::thread::sleep(Duration::from_millis(20));
    let c = shared.counters.snapshot();
    let refused = c.drops[dataplane::nf::DropReason::ReplicationRefused as usize];
    assert_eq!(refused, 5, "15 replicas fit, 5 refused");
    assert_eq!(
        c.tx[Side::Outside.index()],
        15,
        "only replicated packets were processed"
    );
    assert_eq!(
        shared.repl.last_seq.load(Ordering::Relaxed),
        15,
        "refused packets consumed no sequence number"
    );
    let reps = tiny.take_sent(32);
    assert_eq!(
        reps.iter().map(|m| seq_of(m).1.seq).collect::<Vec<_>>(),
        (1..=15).collect::<Vec<_>>()
    );
    drop(reps);
    // The next packet gets sequence 16: no hole for the backup.
    assert!(p.inside.inject(vec![frame(&pkts, 100, 21)]).is_empty());
    wait("one more replica", || tiny.queued() >= 1);
    let next = tiny.take_sent(4);
    assert_eq!(seq_of(&next[0]).1.seq, 16);
    drop(next);
}

#[test]
fn a_packet_that_cannot_be_replicated_mid_burst_is_dropped_alone_and_the_rest_keep_their_order_and_sequence() {
    let pkts = pool("md_pkts", 1023, DEFAULT_DATA_ROOM);
    let headers = pool("md_hdr", 255, HEADER_DATA_ROOM);
    // One clone in the pool, held by the test: a large packet (zero-copy,
    // it needs a clone) cannot be replicated.
    let clones = pool("md_cln", 1, 0);
    let held = Mbuf::alloc(&clones).expect("the only clone");
    let p = Node::start("md", 1, &pkts, &headers, &clones);
    p.become_primary(1);
    std::thread::sleep(Duration::from_millis(20));
    drop(p.rep.take_sent(16));

    // One burst: small 1, large 2, small 3, large 4, small 5.
    let burst = (1..=5)
        .map(|i| frame(&pkts, if i % 2 == 0 { 600 } else { 100 }, i))
        .collect();
    assert!(p.inside.inject(burst).is_empty());
    wait("5 received", || p.shared.counters.snapshot().rx[0] == 5);
    std::thread::sleep(Duration::from_millis(20));
    let c = p.shared.counters.snapshot();
    assert_eq!(c.drops[dataplane::nf::DropReason::NoMbuf as usize], 2);
    assert_eq!(c.tx[Side::Outside.index()], 3);
    let egress = p.outside.take_sent(8);
    assert_eq!(egress.iter().map(|m| id_of(m.data())).collect::<Vec<_>>(), [1, 3, 5]);
    drop(egress);
    let records: Vec<(u64, u32)> = p
        .rep
        .take_sent(16)
        .iter()
        .flat_map(records_of)
        .filter(|(t, _, _)| *t == FrameType::Data)
        .map(|(_, h, body)| (h.seq, id_of(&body)))
        .collect();
    assert_eq!(records, [(1, 1), (2, 3), (3, 5)], "(sequence, packet) of each replica");
    drop(held);
}

#[test]
fn a_busy_primary_that_hears_a_higher_epoch_on_its_replication_port_raises_the_fence() {
    let pkts = pool("fe_pkts", 4095, DEFAULT_DATA_ROOM);
    let headers = pool("fe_hdr", 1023, HEADER_DATA_ROOM);
    let clones = pool("fe_cln", 63, 0);
    let p = Node::start("fe", 1, &pkts, &headers, &clones);
    p.become_primary(1);
    // Traffic keeps the worker busy (it reads the replication port only
    // every few iterations then) while another node's frame of epoch 5
    // arrives there.
    let h = ReplHeader {
        epoch: 5,
        seq: 9,
        ..Default::default()
    };
    let other = build_marker(FrameType::Keepalive, &h, &[], &ENC, &headers).expect("marker");
    let mut id = 0;
    let mut feed = || {
        let burst = (0..32)
            .map(|_| {
                id += 1;
                frame(&pkts, 100, id)
            })
            .collect();
        drop(p.inside.inject(burst));
        drop(p.outside.take_sent(64));
        drop(p.rep.take_sent(64));
    };
    feed();
    assert!(p.rep.inject(vec![other]).is_empty());
    let deadline = Instant::now() + Duration::from_secs(10);
    while p.signals.fence_epoch.load(Ordering::SeqCst) != 5 {
        assert!(Instant::now() < deadline, "no fence within 10 s");
        feed();
    }
    assert!(p.shared.counters.snapshot().rx[0] >= 32, "it was busy");
}

#[test]
fn a_small_chained_packet_is_replicated_whole_not_just_its_first_segment() {
    let pkts = pool("ms_pkts", 1023, DEFAULT_DATA_ROOM);
    let headers = pool("ms_hdr", 255, HEADER_DATA_ROOM);
    let clones = pool("ms_cln", 255, 0);
    let p = Node::start("ms", 1, &pkts, &headers, &clones);
    p.become_primary(1);
    std::thread::sleep(Duration::from_millis(20));
    drop(p.rep.take_sent(16));

    // 100 bytes in two segments (60 + 40), as a NIC with scattered RX
    // delivers them.
    let first = frame(&pkts, 60, 7);
    let mut second = Mbuf::alloc(&pkts).expect("mbuf");
    for (i, b) in second.append(40).expect("room").iter_mut().enumerate() {
        *b = 0xc0 | i as u8;
    }
    let chained = first.chain(second).map_err(|_| "chain").unwrap();
    let bytes = chained.copy_to_vec();
    assert_eq!((chained.nb_segs(), bytes.len()), (2, 100));
    assert!(p.inside.inject(vec![chained]).is_empty());
    wait("forwarded", || {
        p.shared.counters.snapshot().tx[Side::Outside.index()] == 1
    });
    std::thread::sleep(Duration::from_millis(20));
    let records: Vec<(u64, u16, Vec<u8>)> = p
        .rep
        .take_sent(16)
        .iter()
        .flat_map(records_of)
        .filter(|(t, _, _)| *t == FrameType::Data)
        .map(|(_, h, body)| (h.seq, h.length, body))
        .collect();
    assert_eq!(records, [(1, 100, bytes)]);
}

/// Thirty 64-byte packets (ids 1..=30) through a primary and a backup of
/// `opts`, the primary's DATA frames moved to the backup by hand: each
/// frame's records, once the backup has processed all thirty in order and
/// is synchronized, without a gap.
fn thirty_small_packets_in_batches(tag: &str, opts: Opts) -> Vec<Vec<(FrameType, ReplHeader, Vec<u8>)>> {
    let (pkts, headers, clones) = pools(tag, 4095);
    let (mut p, mut b) = pair_with(tag, &pkts, &headers, &clones, [opts; 2]);
    let frames = replicas_of(&p, &pkts, 1..=30, 64);
    let records = frames.iter().map(records_of).collect();
    assert!(b.rep.inject(linearized(&pkts, frames)).is_empty());
    wait("backup processed 30", || {
        b.shared.repl.last_seq.load(Ordering::Relaxed) == 30
    });
    assert!(b.shared.repl.synced.load(Ordering::Relaxed));
    assert_eq!(b.shared.repl.gaps.load(Ordering::Relaxed), 0);
    assert_eq!(b.shared.counters.snapshot().rx[Side::Inside.index()], 30);
    p.stop();
    b.stop();
    records
}

#[test]
fn small_packets_travel_in_batches_and_the_backup_unpacks_every_record_in_order() {
    let data = thirty_small_packets_in_batches("bt", Opts::default());
    // 64-byte packets make 68-byte records: 21 fit in a 1514-byte frame.
    assert_eq!(data.iter().map(|r| r.len()).collect::<Vec<_>>(), vec![21, 9]);
    let seqs: Vec<u64> = data.iter().flatten().map(|r| r.1.seq).collect();
    assert_eq!(seqs, (1..=30).collect::<Vec<_>>());
    let ids: Vec<u32> = data.iter().flatten().map(|r| id_of(&r.2)).collect();
    assert_eq!(
        ids,
        (1..=30).collect::<Vec<_>>(),
        "each record carries its packet as received"
    );
}

#[test]
fn a_jumbo_batch_of_twenty_nine_records_is_unpacked_whole_and_in_order() {
    let jumbo = Opts {
        batch_bytes: 9014,
        ..Opts::default()
    };
    // A batch fills the mbuf's 2048 bytes: 29 records of 68 bytes, more
    // than the backup decodes before it processes the first of them.
    let data = thirty_small_packets_in_batches("jb", jumbo);
    assert_eq!(data.iter().map(|r| r.len()).collect::<Vec<_>>(), vec![29, 1]);
    let seqs: Vec<u64> = data.iter().flatten().map(|r| r.1.seq).collect();
    assert_eq!(seqs, (1..=30).collect::<Vec<_>>());
}

/// UDP from 10.10.1.2 to 10.10.2.2, a host behind the test router's
/// outside port, its payload's first four bytes `id`.
fn routed_udp(p: &Mempool, id: u32) -> Mbuf {
    common::mbuf_of(p, &common::udp_to_vmac([2, 0, 0, 0, 1, 2], id))
}

/// The primary `p` stops and `b` takes over as the primary of epoch 2:
/// the IPv4 frames `b` resent.
fn takeover_resends(p: &mut Node, b: &Node) -> Vec<Vec<u8>> {
    p.stop();
    b.command(WorkerCmd::BecomePrimary { epoch: 2 }, true);
    wait("takeover", || {
        b.shared.repl.takeover_done_ns.load(Ordering::Relaxed) > 0
    });
    ipv4_sent(&b.outside)
}

#[test]
fn a_backup_router_rewrites_batched_records_where_they_lie_and_a_takeover_resends_them_as_the_primary_sent_them() {
    let (pkts, headers, clones) = pools("hb", 4095);
    let server = MacAddr([2, 0, 0, 0, 2, 2]);
    let cfg = common::router_config(None, vec![(Ipv4Addr::new(10, 10, 2, 2), server, Side::Outside)]);
    let start = |tag: &str, node| Node::start_router(tag, node, [&pkts, &headers, &clones], Opts::default(), &cfg);
    let (mut p, b) = (start("hba", 1), start("hbb", 2));
    into_modes(&p, &b);

    // Two bursts: 10 packets, then 20 whose records carry tx_done 10.
    let routed = |p: &Node, n: u64| p.shared.counters.snapshot().tx[Side::Outside.index()] == n;
    assert!(p
        .inside
        .inject((1..=10).map(|i| routed_udp(&pkts, i)).collect())
        .is_empty());
    wait("10 routed", || routed(&p, 10));
    assert!(p
        .inside
        .inject((11..=30).map(|i| routed_udp(&pkts, i)).collect())
        .is_empty());
    wait("30 routed", || routed(&p, 30));
    let sent: Vec<Vec<u8>> = p.outside.take_sent(64).iter().map(|m| m.copy_to_vec()).collect();
    assert_eq!(
        sent.iter().map(|f| id_of(f)).collect::<Vec<_>>(),
        (1..=30).collect::<Vec<_>>()
    );
    assert!(
        sent.iter().all(|f| f[0..6] == server.0 && f[22] == 63),
        "routed: next hop's MAC, TTL 63"
    );

    std::thread::sleep(Duration::from_millis(20));
    let frames = data_frames(p.rep.take_sent(64));
    let records: Vec<_> = frames.iter().map(records_of).collect();
    assert_eq!(records.iter().map(|r| r.len()).collect::<Vec<_>>(), vec![10, 20]);
    assert_eq!(records[1][19].1.tx_done, 10);
    assert!(b.rep.inject(linearized(&pkts, frames)).is_empty());
    wait("backup processed 30", || {
        b.shared.repl.last_seq.load(Ordering::Relaxed) == 30
    });
    // The worker publishes its state field by field, every iteration.
    std::thread::sleep(Duration::from_millis(10));
    assert_eq!(b.shared.repl.shadow_len.load(Ordering::Relaxed), 20);
    assert_eq!(
        b.shared.repl.shadow_frames.load(Ordering::Relaxed),
        1,
        "only the second batch: the first one's records were all released"
    );
    assert_eq!(
        b.shared.counters.snapshot().fast,
        30,
        "every record taken by the fast path where it lies"
    );
    assert!(b.outside.take_sent(64).is_empty(), "a backup transmits nothing");

    let resent = takeover_resends(&mut p, &b);
    assert_eq!(
        resent,
        sent[10..],
        "packets 11..=30 byte for byte as the primary sent them"
    );
    assert_eq!(b.shared.repl.takeover_replayed.load(Ordering::Relaxed), 20);
    drop((p, b));
    assert_eq!(pkts.in_use(), 0, "every batch frame the backup held was freed");
}

/// [`routed_udp`] with its header checksum broken, as a NIC with RX
/// checksum offload might have marked it (`nic`: good, bad, or not at all).
fn routed_udp_marked(p: &Mempool, id: u32, broken: bool, nic: Option<bool>) -> Mbuf {
    let mut m = routed_udp(p, id);
    if broken {
        m.data_mut()[24] ^= 0x5a;
    }
    if let Some(good) = nic {
        m.set_rx_ip_checksum(good);
    }
    m
}

#[test]
fn the_nics_checksum_verdict_travels_with_the_replica_and_the_backup_decides_as_the_primary_did() {
    let (pkts, headers, clones) = pools("ck", 2047);
    let server = MacAddr([2, 0, 0, 0, 2, 2]);
    let cfg = common::router_config(None, vec![(Ipv4Addr::new(10, 10, 2, 2), server, Side::Outside)]);
    let start = |tag: &str, node, opts| Node::start_router(tag, node, [&pkts, &headers, &clones], opts, &cfg);
    let nic = Opts {
        nic_checksum: true,
        ..Opts::default()
    };
    let (mut p, b) = (start("cka", 1, nic), start("ckb", 2, Opts::default()));
    into_modes(&p, &b);

    // 1: a header that does not verify, which the NIC called good (the
    // function takes its word: it is the probe that shows whose word
    // counted); 2: the same header unmarked; 3 and 4: good headers,
    // marked and not.
    let marked = [
        (1, true, Some(true)),
        (2, true, None),
        (3, false, Some(true)),
        (4, false, None),
    ];
    let burst = marked
        .iter()
        .map(|&(id, broken, nic)| routed_udp_marked(&pkts, id, broken, nic));
    assert!(p.inside.inject(burst.collect()).is_empty());
    let bad = |n: &Node| n.shared.counters.snapshot().drops[DropReason::BadChecksum as usize];
    wait("primary decided 4", || {
        p.shared.counters.snapshot().tx[Side::Outside.index()] == 3 && bad(&p) == 1
    });
    let sent: Vec<Vec<u8>> = p.outside.take_sent(64).iter().map(|m| m.copy_to_vec()).collect();
    assert_eq!(sent.iter().map(|f| id_of(f)).collect::<Vec<_>>(), vec![1, 3, 4]);
    assert_eq!(p.shared.counters.snapshot().fast, 3, "1, 3 and 4 by the fast path");

    std::thread::sleep(Duration::from_millis(20));
    let frames = data_frames(p.rep.take_sent(64));
    let records: Vec<_> = frames.iter().flat_map(records_of).collect();
    assert_eq!(
        records.iter().map(|(_, h, _)| h.ingress).collect::<Vec<_>>(),
        vec![ingress::IP_CHECKSUM_OK, 0, ingress::IP_CHECKSUM_OK, 0],
        "the NIC's word, in each record (inside is port 0)"
    );

    assert!(b.rep.inject(linearized(&pkts, frames)).is_empty());
    wait("backup processed 4", || {
        b.shared.repl.last_seq.load(Ordering::Relaxed) == 4
    });
    std::thread::sleep(Duration::from_millis(10));
    assert_eq!(bad(&b), 1, "the backup dropped what the primary dropped");
    assert_eq!(b.shared.repl.shadow_len.load(Ordering::Relaxed), 3);
    assert_eq!(b.shared.counters.snapshot().fast, 3);

    let resent = takeover_resends(&mut p, &b);
    assert_eq!(resent, sent, "1, 3 and 4 byte for byte as the primary sent them");
}

#[test]
fn a_full_shadow_ring_keeps_the_newest_batched_egress_and_a_takeover_resends_exactly_that() {
    let (pkts, headers, clones) = pools("so", 4095);
    let small = Opts {
        shadow: 8,
        ..Opts::default()
    };
    let (mut p, b) = pair_with("so", &pkts, &headers, &clones, [Opts::default(), small]);
    // One burst of 30: batches of 21 and 9 records, every tx_done 0.
    let frames = replicas_of(&p, &pkts, 1..=30, 64);
    drop(p.outside.take_sent(64));
    assert_eq!(frames.iter().map(|f| records_of(f).len()).collect::<Vec<_>>(), [21, 9]);
    assert!(b.rep.inject(linearized(&pkts, frames)).is_empty());
    wait("backup processed 30", || {
        b.shared.repl.last_seq.load(Ordering::Relaxed) == 30
    });
    // The worker publishes its state field by field, every iteration.
    std::thread::sleep(Duration::from_millis(10));
    let st = &b.shared.repl;
    assert_eq!(
        (
            st.shadow_len.load(Ordering::Relaxed),
            st.shadow_overflow.load(Ordering::Relaxed),
            st.shadow_frames.load(Ordering::Relaxed)
        ),
        (8, 22, 1),
        "the first batch frame (records 1..=21) freed as its last record left"
    );
    let resent: Vec<u32> = takeover_resends(&mut p, &b).iter().map(|f| id_of(f)).collect();
    assert_eq!(
        resent,
        (23..=30).collect::<Vec<_>>(),
        "the eight newest, from the second batch"
    );
    assert_eq!(b.shared.counters.snapshot().drops[DropReason::NoMbuf as usize], 0);
    drop((p, b));
    assert_eq!(pkts.in_use(), 0);
}

// Flow control: the backups' ACKs, and a primary that runs at most a
// window ahead of them.

/// An ACK from backup `node` of shard 0 up to `seq`, as it leaves a backup.
fn ack(headers: &Mempool, node: u32, seq: u64, synced: bool) -> Mbuf {
    ack_of_shard(headers, node, 0, seq, synced)
}

fn ack_of_shard(headers: &Mempool, node: u32, shard: u16, seq: u64, synced: bool) -> Mbuf {
    let h = ReplHeader {
        shard,
        epoch: 1,
        seq,
        ..Default::default()
    };
    build_marker(FrameType::Ack, &h, &AckBody { node, synced }.emit(), &ENC, headers).expect("ack")
}

/// A primary with flow control and its pools (which drop after it).
struct FlowBed {
    p: Node,
    pkts: Arc<Mempool>,
    headers: Arc<Mempool>,
    _clones: Arc<Mempool>,
}

/// A primary of epoch 1 with a flow window of 64 records and `hold_ns`,
/// once it has read `acks` (node, sequence, synchronized).
fn flow_primary(tag: &str, hold_ns: u64, acks: &[(u32, u64, bool)]) -> FlowBed {
    let (pkts, headers, clones) = pools(tag, 2047);
    let opts = Opts {
        flow_window: 64,
        flow_hold_ns: hold_ns,
        ..Opts::default()
    };
    let p = Node::start_with(tag, 1, &pkts, &headers, &clones, opts);
    p.become_primary(1);
    // Its announcement (gratuitous ARP on the inside port) out of the way.
    std::thread::sleep(Duration::from_millis(20));
    drop(p.inside.take_sent(8));
    let frames = acks
        .iter()
        .map(|&(n, seq, synced)| ack(&headers, n, seq, synced))
        .collect();
    assert!(p.rep.inject(frames).is_empty());
    wait("the acks read", || {
        p.shared.repl.acks_rx.load(Ordering::Relaxed) == acks.len() as u64
    });
    FlowBed {
        p,
        pkts,
        headers,
        _clones: clones,
    }
}

fn replicated(p: &Node) -> u64 {
    p.shared.repl.last_seq.load(Ordering::Relaxed)
}

#[test]
fn a_primary_runs_exactly_a_window_ahead_of_its_backups_last_ack_and_each_new_ack_moves_it_on() {
    let bed = flow_primary("fw", 60_000_000_000, &[(2, 0, true)]);
    let (p, pkts, headers) = (&bed.p, &bed.pkts, &bed.headers);
    assert!(p
        .inside
        .inject((1..=200).map(|i| frame(pkts, 300, i)).collect())
        .is_empty());
    let settle = |what: &str, seq: u64| {
        wait(what, || replicated(p) == seq);
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(replicated(p), seq, "{what}: held there");
        assert_eq!(
            p.inside.queued() as u64,
            200 - seq,
            "{what}: the rest waits at the port"
        );
    };
    settle("window past ack 0", 64);
    assert!(
        p.shared.repl.flow_held_ns.load(Ordering::Relaxed) >= 20_000_000,
        "held 30 ms"
    );
    assert_eq!(p.shared.repl.flow_lag.load(Ordering::Relaxed), 64);
    assert!(p.rep.inject(vec![ack(headers, 2, 50, true)]).is_empty());
    settle("window past ack 50", 114);
    assert!(p.rep.inject(vec![ack(headers, 2, 150, true)]).is_empty());
    wait("all 200", || replicated(p) == 200);
    let egress = p.outside.take_sent(256);
    assert_eq!(
        egress.iter().map(|m| id_of(m.data())).collect::<Vec<_>>(),
        (1..=200).collect::<Vec<_>>(),
        "every packet forwarded once, in order"
    );
    assert_eq!(p.shared.counters.snapshot().total_drops(), 0);
}

#[test]
fn the_slowest_of_two_backups_holds_the_primary_and_an_unsynchronized_one_does_not() {
    let bed = flow_primary("f2", 60_000_000_000, &[(2, 30, true), (3, 10, true), (4, 0, false)]);
    let (p, pkts, headers) = (&bed.p, &bed.pkts, &bed.headers);
    assert!(p
        .inside
        .inject((1..=200).map(|i| frame(pkts, 300, i)).collect())
        .is_empty());
    wait("window past node 3's ack", || replicated(p) == 74);
    std::thread::sleep(Duration::from_millis(30));
    assert_eq!(replicated(p), 74);
    assert!(p.rep.inject(vec![ack(headers, 3, 40, true)]).is_empty());
    wait("window past node 2's ack, now the slowest", || replicated(p) == 94);
    std::thread::sleep(Duration::from_millis(30));
    assert_eq!(replicated(p), 94);
}

#[test]
fn a_backup_silent_for_longer_than_the_hold_no_longer_holds_the_primary() {
    let bed = flow_primary("fs", 300_000_000, &[(2, 0, true)]);
    let (p, pkts) = (&bed.p, &bed.pkts);
    let t0 = Instant::now();
    assert!(p
        .inside
        .inject((1..=200).map(|i| frame(pkts, 300, i)).collect())
        .is_empty());
    wait("all 200", || replicated(p) == 200);
    let held = p.shared.repl.flow_held_ns.load(Ordering::Relaxed);
    assert!(
        (200_000_000..=310_000_000).contains(&held),
        "held until the ack was 300 ms old, from when the window filled: {held} ns"
    );
    assert!(
        t0.elapsed() >= Duration::from_millis(250),
        "held until the ack was 300 ms old"
    );
    assert_eq!(p.shared.repl.flow_lag.load(Ordering::Relaxed), 0, "nobody to wait for");
}

#[test]
fn a_backup_acknowledges_the_last_sequence_it_processed_with_its_node_id() {
    let (pkts, headers, clones) = pools("fa", 4095);
    let acking = Opts {
        flow_window: 64,
        ..Opts::default()
    };
    let (p, b) = pair_with("fa", &pkts, &headers, &clones, [Opts::default(), acking]);
    assert!(p
        .inside
        .inject((1..=40).map(|i| frame(&pkts, 300, i)).collect())
        .is_empty());
    wait("replicas", || p.rep.queued() >= 40);
    let data = data_frames(p.rep.take_sent(64));
    assert_eq!(data.len(), 40);
    assert!(b.rep.inject(linearized(&pkts, data)).is_empty());
    wait("backup at 40", || b.shared.repl.last_seq.load(Ordering::Relaxed) == 40);
    wait("its ack of 40", || b.shared.repl.acks_tx.load(Ordering::Relaxed) >= 1);
    let sent = b.rep.take_sent(64);
    let acks: Vec<(ReplHeader, Option<AckBody>)> = sent
        .iter()
        .map(|m| {
            let d = m.copy_to_vec();
            let f = ReplicationFrame::new_checked(&d[14..]).expect("frame");
            assert_eq!(f.frame_type(), FrameType::Ack, "a backup sends only ACKs");
            (f.header(), AckBody::parse(f.body()))
        })
        .collect();
    let last = acks.last().expect("an ack");
    assert_eq!((last.0.shard, last.0.epoch, last.0.seq), (0, 1, 40));
    assert_eq!(last.1, Some(AckBody { node: 2, synced: true }));
    assert!(
        acks.windows(2).all(|w| w[0].0.seq < w[1].0.seq),
        "each ack goes further"
    );
    assert!(b.inside.take_sent(8).is_empty() && b.outside.take_sent(8).is_empty());
}

#[test]
fn with_flow_control_a_backup_behind_a_small_rx_ring_follows_a_fast_primary_without_a_gap() {
    const N: u32 = 3000;
    let (pkts, headers, clones) = pools("fl", 8191);
    // One record per frame, a backup whose replication RX ring holds 63
    // frames, and which sleeps 50 us whenever it finds nothing: without
    // flow control the primary's bursts overflow that ring at once.
    let window = Opts {
        batch_bytes: 0,
        flow_window: 48,
        flow_hold_ns: 60_000_000_000,
        ..Opts::default()
    };
    let small_rx = Opts {
        rep_rx_slots: 64,
        ..window
    };
    let (p, b) = pair_with("fl", &pkts, &headers, &clones, [window, small_rx]);
    // The link: frames one way, ACKs the other; what a full RX ring
    // refuses is lost, as on a NIC.
    let lost = std::cell::Cell::new(0usize);
    let link = || lost.set(lost.get() + relay(&p, &b, &pkts));
    // The primary hears the backup before the stream starts (a pair that
    // has been up for a while).
    wait("the backup's first ack", || {
        link();
        p.shared.repl.acks_rx.load(Ordering::Relaxed) > 0
    });
    let mut next = 1u32;
    let deadline = Instant::now() + Duration::from_secs(30);
    while b.shared.repl.last_seq.load(Ordering::Relaxed) < N as u64 {
        assert!(Instant::now() < deadline, "the backup did not reach {N}");
        if next <= N {
            let burst: Vec<Mbuf> = (next..=N.min(next + 255)).map(|i| frame(&pkts, 300, i)).collect();
            let n = burst.len() as u32;
            let refused = p.inside.inject(burst).len() as u32;
            next += n - refused;
        }
        link();
    }
    let r = &b.shared.repl;
    assert_eq!(lost.get(), 0, "no frame lost at the backup's RX ring");
    assert_eq!(
        (r.gaps.load(Ordering::Relaxed), r.synced.load(Ordering::Relaxed)),
        (0, true)
    );
    assert_eq!(replicated(&p), N as u64);
    assert!(
        p.shared.repl.flow_held_ns.load(Ordering::Relaxed) > 0,
        "the backup set the pace"
    );
}

#[test]
fn an_ack_read_by_another_worker_of_the_node_paces_the_shard_it_names() {
    let pkts = pool("fx_pkts", 4095, DEFAULT_DATA_ROOM);
    let headers = pool("fx_hdr", 1023, HEADER_DATA_ROOM);
    let clones = pool("fx_cln", 1023, 0);
    let signals = Arc::new(NodeSignals::default());
    let shard = |k: u16| Opts {
        flow_window: 64,
        flow_hold_ns: 60_000_000_000,
        shard: k,
        ..Opts::default()
    };
    let workers: Vec<Node> = (0..2)
        .map(|k| {
            Node::start_in(
                &format!("fx{k}"),
                1,
                [&pkts, &headers, &clones],
                shard(k),
                signals.clone(),
            )
        })
        .collect();
    for w in &workers {
        w.become_primary(1);
    }
    let (w0, w1) = (&workers[0], &workers[1]);
    // Shard 1's ACK reaches worker 0's queue (a NIC that cannot steer).
    assert!(w0.rep.inject(vec![ack_of_shard(&headers, 2, 1, 0, true)]).is_empty());
    wait("worker 0 read it", || {
        w0.shared.repl.acks_rx.load(Ordering::Relaxed) == 1
    });
    for w in &workers {
        assert!(w
            .inside
            .inject((1..=200).map(|i| frame(&pkts, 300, i)).collect())
            .is_empty());
    }
    wait("shard 0 unpaced: all 200", || replicated(w0) == 200);
    wait("shard 1 a window past the ACK", || replicated(w1) == 64);
    std::thread::sleep(Duration::from_millis(30));
    assert_eq!(replicated(w1), 64);
    assert_eq!(
        w1.shared.repl.acks_rx.load(Ordering::Relaxed),
        0,
        "worker 1 read no ACK"
    );
    assert!(w0.rep.inject(vec![ack_of_shard(&headers, 2, 1, 100, true)]).is_empty());
    wait("shard 1 a window past the next", || replicated(w1) == 164);
}

/// A UDP reply from the server to what the NAT sent out (`out`, as it
/// left the outside port): addresses and ports swapped, to the virtual MAC.
fn reply_to(p: &Mempool, out: &[u8], server: MacAddr) -> Mbuf {
    let mut f = out.to_vec();
    f[0..6].copy_from_slice(&[2, 0, 0x5e, 0, 1, 1]);
    f[6..12].copy_from_slice(&server.0);
    let (src, dst) = (f[26..30].to_vec(), f[30..34].to_vec());
    f[26..30].copy_from_slice(&dst);
    f[30..34].copy_from_slice(&src);
    f[22] = 64;
    f[24..26].copy_from_slice(&[0, 0]);
    let c = dataplane::wire::checksum::checksum(&f[14..34]);
    f[24..26].copy_from_slice(&c.to_be_bytes());
    let (sport, dport) = (f[34..36].to_vec(), f[36..38].to_vec());
    f[34..36].copy_from_slice(&dport);
    f[36..38].copy_from_slice(&sport);
    f[40..42].copy_from_slice(&[0, 0]);
    common::mbuf_of(p, &f)
}

/// The IPv4 frames a port sent (announcements left out).
fn ipv4_sent(port: &RingPort) -> Vec<Vec<u8>> {
    port.take_sent(256)
        .iter()
        .map(|m| m.copy_to_vec())
        .filter(|f| f[12..14] == [0x08, 0x00])
        .collect()
}

#[test]
fn a_nat_backup_started_after_the_stream_is_checkpointed_and_takes_over_every_session() {
    nat_backup_started_late_is_checkpointed("kp", 256);
}

/// Without flow control a backup sends ACKs only to say it is not
/// synchronized: enough to be checkpointed.
#[test]
fn without_flow_control_a_late_nat_backup_still_asks_for_and_gets_its_checkpoint() {
    nat_backup_started_late_is_checkpointed("kq", 0);
}

/// A NAT primary makes 40 sessions, then a backup (node 2) starts: it is
/// checkpointed while traffic goes on, follows the stream, and after a
/// takeover translates the replies of all 40 back to the client's ports.
fn nat_backup_started_late_is_checkpointed(tag: &str, flow_window: u64) {
    let (pkts, headers, clones) = pools(tag, 4095);
    let server = MacAddr([2, 0, 0, 0, 2, 2]);
    let client = [2, 0, 0, 0, 1, 2];
    let cfg = common::router_config(
        Some(common::nat_config(1024)),
        vec![
            (Ipv4Addr::new(10, 10, 2, 2), server, Side::Outside),
            (Ipv4Addr::new(10, 10, 1, 2), MacAddr(client), Side::Inside),
        ],
    );
    let opts = Opts {
        flow_window,
        flow_hold_ns: 60_000_000_000,
        ..Opts::default()
    };
    let start = |tag: &str, node| Node::start_router(tag, node, [&pkts, &headers, &clones], opts, &cfg);
    // UDP from the client's port `port`.
    let flow = |port: u16, id: u32| {
        let mut f = common::udp_to_vmac(client, id);
        f[34..36].copy_from_slice(&port.to_be_bytes());
        common::mbuf_of(&pkts, &f)
    };
    let sent_out = |n: &Node| n.shared.counters.snapshot().tx[Side::Outside.index()];

    // 40 sessions made before any backup is there.
    let mut p = start(&format!("{tag}a"), 1);
    p.become_primary(1);
    assert!(p
        .inside
        .inject((0..40).map(|i| flow(4000 + i, i as u32)).collect())
        .is_empty());
    wait("40 translated", || sent_out(&p) == 40);
    let first = ipv4_sent(&p.outside);
    assert_eq!(first.len(), 40);
    drop(p.rep.take_sent(256));

    // The backup comes up now: its stream starts at sequence 41.
    let b = start(&format!("{tag}b"), 2);
    b.become_backup(1);
    let link = || assert_eq!(relay(&p, &b, &pkts), 0, "no frame lost");
    // Traffic goes on while it is brought into sync: old flows and new.
    assert!(p
        .inside
        .inject((0..20).map(|i| flow(4000 + i * 3, 100 + i as u32)).collect())
        .is_empty());
    // (A backup counts as synchronized until its first frame shows the
    // gap: wait for the checkpoint itself.)
    wait("synchronized by a checkpoint", || {
        link();
        b.shared.repl.checkpoints_installed.load(Ordering::Relaxed) > 0 && b.shared.repl.synced.load(Ordering::Relaxed)
    });
    let (pr, br) = (&p.shared.repl, &b.shared.repl);
    assert_eq!(pr.checkpoints_sent.load(Ordering::Relaxed), 1);
    assert_eq!(
        pr.checkpoint_last_rounds.load(Ordering::Relaxed),
        1,
        "40 sessions: one round"
    );
    assert_eq!(br.checkpoints_installed.load(Ordering::Relaxed), 1);
    assert_eq!(br.checkpoint_pieces_lost.load(Ordering::Relaxed), 0);
    let joined = br.joined_at.load(Ordering::Relaxed);
    assert!(joined > 40, "joined after the sessions were made (at {joined})");
    assert!(br.gaps.load(Ordering::Relaxed) >= 1, "it started with a gap");
    // Then the stream: new flows, processed on the installed state.
    assert!(p
        .inside
        .inject((0..10).map(|i| flow(5000 + i, 200 + i as u32)).collect())
        .is_empty());
    wait("the backup caught up", || {
        link();
        b.shared.repl.last_seq.load(Ordering::Relaxed) == p.shared.repl.last_seq.load(Ordering::Relaxed)
            && p.shared.repl.last_seq.load(Ordering::Relaxed) == 70
    });
    assert!(b.shared.repl.synced.load(Ordering::Relaxed));

    // The primary dies; the backup takes over and answers for every
    // session, those made before it existed included, with the same port.
    p.stop();
    b.command(WorkerCmd::BecomePrimary { epoch: 2 }, true);
    wait("takeover", || {
        b.shared.repl.takeover_done_ns.load(Ordering::Relaxed) > 0
    });
    drop(b.inside.take_sent(256));
    drop(b.outside.take_sent(256));
    assert!(b
        .outside
        .inject(first.iter().map(|f| reply_to(&pkts, f, server)).collect())
        .is_empty());
    let sent_in = || b.shared.counters.snapshot().tx[Side::Inside.index()];
    let before = sent_in();
    wait("40 replies translated back", || sent_in() >= before + 40);
    let back = ipv4_sent(&b.inside);
    assert_eq!(back.len(), 40);
    for (i, f) in back.iter().enumerate() {
        assert_eq!(
            (&f[30..34], u16::from_be_bytes([f[36], f[37]])),
            (&[10u8, 10, 1, 2][..], 4000 + i as u16),
            "reply {i} to the client's own port"
        );
    }
    assert_eq!(b.shared.counters.snapshot().drops[DropReason::NoSession as usize], 0);
}

/// Traffic that touches every session while each round is under way keeps
/// a round's changes as big as the round: the checkpoint closes with them
/// all the same, the data ports held until the backup has them, instead of
/// running round after round and giving up. The backup's state is then the
/// primary's: audits of every slice agree while the traffic goes on.
#[test]
fn a_checkpoint_whose_rounds_do_not_shrink_closes_with_the_sessions_in_use_and_every_audit_agrees() {
    // The most a node may allow: the estimate of a test's pace on a busy
    // machine stays under it.
    rounds_that_do_not_shrink("kc", 1_000_000_000);
}

/// With no hold allowed, the same checkpoint goes round after round and is
/// abandoned, saying why.
#[test]
fn with_no_hold_allowed_a_checkpoint_whose_rounds_do_not_shrink_is_abandoned_as_not_converging() {
    rounds_that_do_not_shrink("kd", 0);
}

const CLIENT: [u8; 6] = [2, 0, 0, 0, 1, 2];

/// A NAT router that knows the server's and the client's MACs.
fn nat_knowing_both(max_sessions: usize) -> Arc<RouterConfig> {
    common::router_config(
        Some(common::nat_config(max_sessions)),
        vec![
            (Ipv4Addr::new(10, 10, 2, 2), MacAddr([2, 0, 0, 0, 2, 2]), Side::Outside),
            (Ipv4Addr::new(10, 10, 1, 2), MacAddr(CLIENT), Side::Inside),
        ],
    )
}

/// UDP from the client's port 10 000 + `i`, packet `id`.
fn client_udp(pkts: &Mempool, i: u16, id: u32) -> Mbuf {
    let mut f = common::udp_to_vmac(CLIENT, id);
    f[34..36].copy_from_slice(&(10_000 + i).to_be_bytes());
    common::mbuf_of(pkts, &f)
}

/// `n` sessions made on primary `p` (no backup yet), 250 packets at a
/// time, each batch out before the next.
fn make_sessions(p: &Node, pkts: &Mempool, n: u16) {
    for at in (0..n).step_by(250) {
        let end = (at + 250).min(n);
        assert!(p
            .inside
            .inject((at..end).map(|i| client_udp(pkts, i, i as u32)).collect())
            .is_empty());
        wait("the sessions made", || {
            while !p.outside.take_sent(256).is_empty() {}
            while !p.rep.take_sent(256).is_empty() {}
            p.shared.counters.snapshot().tx[Side::Outside.index()] == end as u64
        });
    }
}

fn rounds_that_do_not_shrink(tag: &str, hold_ns: u64) {
    const SESSIONS: u16 = 4000;
    let (pkts, headers, clones) = pools(tag, 16383);
    let cfg = nat_knowing_both(8192);
    let opts = Opts {
        // A pass (4000 records) never waits for the backup: every pass
        // touches every session.
        flow_window: 8192,
        flow_hold_ns: 60_000_000_000,
        audit_ns: 100_000,
        checkpoint_hold_ns: hold_ns,
        ..Opts::default()
    };
    let start = |tag: &str, node| Node::start_router(tag, node, [&pkts, &headers, &clones], opts, &cfg);
    let drain = |p: &Node| while !p.outside.take_sent(256).is_empty() {};
    // Every session once, 250 packets at a time, the outside ring drained
    // after each; what the inside ring has no room for is tried again for
    // a millisecond (not longer: a closing checkpoint holds the ports),
    // then dropped.
    let pass = |p: &Node, id: &std::cell::Cell<u32>| {
        for at in (0..SESSIONS).step_by(250) {
            let mut batch: Vec<Mbuf> = (at..(at + 250).min(SESSIONS))
                .map(|i| {
                    id.set(id.get() + 1);
                    client_udp(&pkts, i, id.get())
                })
                .collect();
            for _ in 0..5 {
                batch = p.inside.inject(batch);
                drain(p);
                if batch.is_empty() {
                    break;
                }
                std::thread::sleep(Duration::from_micros(200));
            }
        }
    };
    let id = std::cell::Cell::new(0);
    let p = start(&format!("{tag}a"), 1);
    p.become_primary(1);
    make_sessions(&p, &pkts, SESSIONS);

    let b = start(&format!("{tag}b"), 2);
    b.become_backup(1);
    let (pr, br) = (&p.shared.repl, &b.shared.repl);
    // One relay of the link per pass over every session: a round (125
    // pieces, 64 in flight, the backup's ACKs a relay later) spans a whole
    // pass at least, so its changes are every session again.
    let relay_once = || assert_eq!(relay(&p, &b, &pkts), 0, "no frame lost");
    if hold_ns == 0 {
        wait("abandoned", || {
            pass(&p, &id);
            drain(&p);
            relay_once();
            pr.checkpoints_abandoned.load(Ordering::Relaxed) > 0
        });
        assert_eq!(
            Abandoned::from_code(pr.checkpoint_abandoned_why.load(Ordering::Relaxed)),
            Some(Abandoned::NoConvergence)
        );
        assert_eq!(pr.checkpoints_sent.load(Ordering::Relaxed), 0);
        assert!(!br.synced.load(Ordering::Relaxed));
        return;
    }
    wait("synchronized by a checkpoint", || {
        pass(&p, &id);
        drain(&p);
        relay_once();
        br.checkpoints_installed.load(Ordering::Relaxed) > 0 && br.synced.load(Ordering::Relaxed)
    });
    assert_eq!(pr.checkpoints_abandoned.load(Ordering::Relaxed), 0);
    assert_eq!(pr.checkpoints_sent.load(Ordering::Relaxed), 1);
    let rounds = pr.checkpoint_last_rounds.load(Ordering::Relaxed);
    assert!(
        rounds >= 2,
        "the first round's changes were all of it again: {rounds} rounds"
    );
    assert!(
        pr.checkpoint_pieces.load(Ordering::Relaxed) > 2 * 125,
        "the sessions went twice at least"
    );
    // Every slice audited, more than once, while the traffic goes on.
    let audited = br.audits.load(Ordering::Relaxed);
    wait("two rounds of audits", || {
        pass(&p, &id);
        drain(&p);
        relay_once();
        br.audits.load(Ordering::Relaxed) >= audited + 128
    });
    assert_eq!(br.audit_mismatches.load(Ordering::Relaxed), 0);
    assert!(br.synced.load(Ordering::Relaxed));
}

/// A checkpoint whose backup stops reporting its progress waits a second
/// at the window, is abandoned, and says why.
#[test]
fn a_checkpoint_without_progress_from_its_backup_is_abandoned_as_stalled() {
    let (pkts, headers, clones) = pools("ks", 8191);
    let cfg = nat_knowing_both(4096);
    let opts = Opts {
        flow_window: 0,
        ..Opts::default()
    };
    let start = |tag: &str, node| Node::start_router(tag, node, [&pkts, &headers, &clones], opts, &cfg);
    let p = start("ksa", 1);
    p.become_primary(1);
    // 3000 sessions: 94 pieces, more than the 64 a backup may be behind.
    make_sessions(&p, &pkts, 3000);
    let b = start("ksb", 2);
    b.become_backup(1);
    let pr = &p.shared.repl;
    // Both ways until the checkpoint starts, then the backup's ACKs are
    // lost: no progress reaches the primary.
    wait("a checkpoint started", || {
        assert_eq!(relay(&p, &b, &pkts), 0);
        pr.checkpoints_started.load(Ordering::Relaxed) == 1
    });
    let t0 = Instant::now();
    wait("abandoned", || {
        drop(b.rep.inject(linearized(&pkts, p.rep.take_sent(256))));
        drop(b.rep.take_sent(256));
        pr.checkpoints_abandoned.load(Ordering::Relaxed) == 1
    });
    assert!(t0.elapsed() >= Duration::from_millis(900), "after a second's wait");
    assert_eq!(
        Abandoned::from_code(pr.checkpoint_abandoned_why.load(Ordering::Relaxed)),
        Some(Abandoned::Stalled)
    );
    assert_eq!(pr.checkpoints_sent.load(Ordering::Relaxed), 0);
}

/// A backup whose state an AUDIT finds different from the primary's loses
/// its synchronization, asks for a checkpoint in its next ACK, and gets it.
#[test]
fn a_failed_audit_unsynchronizes_a_nat_backup_until_the_primarys_next_checkpoint() {
    let (pkts, headers, clones) = pools("au", 4095);
    let cfg = common::router_config(
        Some(common::nat_config(1024)),
        vec![(Ipv4Addr::new(10, 10, 2, 2), MacAddr([2, 0, 0, 0, 2, 2]), Side::Outside)],
    );
    let opts = Opts {
        flow_window: 256,
        flow_hold_ns: 60_000_000_000,
        ..Opts::default()
    };
    let start = |tag: &str, node| Node::start_router(tag, node, [&pkts, &headers, &clones], opts, &cfg);
    let (p, b) = (start("aua", 1), start("aub", 2));
    into_modes(&p, &b);
    let link = || assert_eq!(relay(&p, &b, &pkts), 0, "no frame lost");
    assert!(p
        .inside
        .inject((1..=20).map(|i| routed_udp(&pkts, i)).collect())
        .is_empty());
    let (pr, br) = (&p.shared.repl, &b.shared.repl);
    wait("the backup followed 20", || {
        link();
        br.last_seq.load(Ordering::Relaxed) == 20
    });
    assert!(br.synced.load(Ordering::Relaxed), "followed from sequence 1");
    assert_eq!(
        pr.checkpoints_started.load(Ordering::Relaxed),
        0,
        "no checkpoint needed"
    );

    // An AUDIT at its last sequence whose digest is not its state's.
    let h = ReplHeader {
        shard: 0,
        epoch: 1,
        seq: 20,
        tx_done: 20,
        ..Default::default()
    };
    let wrong = AuditBody {
        slice: 0,
        of: 64,
        digest: 0x5eed,
    };
    let audit = build_marker(FrameType::Audit, &h, &wrong.emit(), &ENC, &headers).expect("audit");
    assert!(b.rep.inject(vec![audit]).is_empty());
    wait("the mismatch", || br.audit_mismatches.load(Ordering::Relaxed) == 1);
    wait("checkpointed again", || {
        link();
        br.checkpoints_installed.load(Ordering::Relaxed) == 1 && br.synced.load(Ordering::Relaxed)
    });
    assert_eq!(pr.checkpoints_sent.load(Ordering::Relaxed), 1);
    assert_eq!(
        br.joined_at.load(Ordering::Relaxed),
        21,
        "from the boundary it was taken at on"
    );
    // It follows on from there.
    assert!(p
        .inside
        .inject((21..=30).map(|i| routed_udp(&pkts, i)).collect())
        .is_empty());
    wait("the backup followed 30", || {
        link();
        br.last_seq.load(Ordering::Relaxed) == 30
    });
    assert!(br.synced.load(Ordering::Relaxed));
    assert_eq!(br.gaps.load(Ordering::Relaxed), 0);
}
