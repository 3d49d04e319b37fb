//! The run-to-completion poll loop of one shard (one worker lcore).
//!
//! Worker `q` owns RX/TX queue `q` of both data ports, TX queue `q` of the
//! replication port, and all the flow state of its shard: no lock on the
//! fast path. It runs in one of three modes:
//!
//! - **standalone** (no replication): `rx_burst` each data port, the network
//!   function over each frame, `tx_burst` to the egress port.
//! - **primary** ([`primary`]): as standalone, but every packet first gets
//!   the shard's next sequence number and the clock, and its replica is
//!   handed to the replication port *before* the function runs (output
//!   commit). Idle shards send KEEPALIVEs.
//! - **backup** ([`backup`]): follows the replication stream in sequence
//!   order with the primary's time, keeps the egress in a shadow ring, keeps
//!   a window of its own data-port ingress, transmits nothing.
//!
//! Mode changes come from the control thread as [`WorkerCmd`]s, polled once
//! per iteration; [`takeover`] turns a backup into the primary. TX ownership
//! (one atomic per port and queue) is read once per burst.

pub mod announce;
pub mod backup;
mod checkpoint;
mod held;
pub mod primary;
pub mod status;
pub mod steer;
pub mod takeover;

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crossbeam::channel::Receiver;
use hdrhistogram::Histogram;

use crate::clock::TscClock;
use crate::dpdk::eal::{rdtsc, tsc_hz};
use crate::dpdk::mbuf::MbufStash;
use crate::dpdk::ring::MbufRing;
use crate::dpdk::{Mbuf, Mempool, Port, RxBurst, RxQueue, TxBatch, TxQueue};
use crate::frame::Frame;
use crate::nf::{DropReason, NetworkFunction, Owner, PacketCtx, Side, Verdict};
use crate::ownership::TxOwnership;
use crate::replication::builder::Encap;
use crate::replication::flow::{AckBoard, AckPacer, FlowGate};
use crate::replication::handoff::HandoffLedger;
use crate::replication::learn::MacTable;
use crate::replication::seq::SeqTracker;
use crate::replication::shadow::ShadowRing;
use crate::replication::window::IngressWindow;
use crate::stats::{bump, new_latency_histogram, LatencyShared, WorkerCounters};
use crate::wire::MacAddr;
use checkpoint::CheckpointState;
use held::{Egress, HeldBatches};

pub use checkpoint::{Abandoned, CHECKPOINT_HOLD_NS};
pub use status::{Mode, ReplStatus};
pub use steer::Steering;

/// Largest burst a worker handles (the `burst` setting is capped to it).
pub const MAX_BURST: usize = 256;

/// How often a worker merges its latency histogram into the shared one.
const LATENCY_PUBLISH_NS: u64 = 100_000_000;

/// What a worker shares with the control thread.
pub struct WorkerShared {
    pub shard: u16,
    pub counters: WorkerCounters,
    pub latency: LatencyShared,
    pub repl: ReplStatus,
    /// `start`/`stop` of the interactive prompt: when false the worker does
    /// not poll its queues.
    pub forwarding: AtomicBool,
    /// `show sessions`: the control thread raises the flag, the worker
    /// answers with its function's description (between bursts).
    pub describe_request: AtomicBool,
    pub description: std::sync::Mutex<Option<String>>,
}

impl WorkerShared {
    pub fn new(shard: u16) -> Arc<WorkerShared> {
        Arc::new(WorkerShared {
            shard,
            counters: WorkerCounters::default(),
            latency: LatencyShared::default(),
            repl: ReplStatus::default(),
            forwarding: AtomicBool::new(true),
            describe_request: AtomicBool::new(false),
            description: std::sync::Mutex::new(None),
        })
    }
}

/// Signals every worker of the node reads.
#[derive(Default)]
pub struct NodeSignals {
    /// Highest epoch seen in replication frames while primary: a worker of a
    /// primary with a lower epoch stops transmitting at once.
    pub fence_epoch: AtomicU32,
    /// What the backups acknowledged, per shard (flow control).
    pub acks: AckBoard,
}

/// Commands from the control thread.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WorkerCmd {
    /// Become the primary of `epoch`. From backup: replay the shadow ring
    /// after the last `tx_done`, then process the ingress the old primary
    /// never replicated, then announce.
    BecomePrimary { epoch: u32 },
    /// Stop transmitting and follow the primary of `epoch`. `diverged`: this
    /// node's state may differ from the new primary's (it was fenced).
    BecomeBackup { epoch: u32, diverged: bool },
    /// Planned switchover: stop at a sequence boundary, send SWITCHOVER
    /// naming `target`, become a backup.
    HandOver { target: u32 },
    /// Testing the watchdog: sleep this long inside the loop.
    Stall { ms: u64 },
}

/// Queues of one data port as seen by one worker.
#[derive(Clone, Copy, Debug)]
pub struct DataQueues {
    pub rx: RxQueue,
    pub tx: TxQueue,
    /// The port verifies IPv4 header checksums on receive
    /// ([`Port::rx_ip_checksum`](crate::dpdk::Port::rx_ip_checksum)): its
    /// mbufs' GOOD flag spares the function the check.
    pub rx_ip_checksum: bool,
}

impl DataQueues {
    /// Queue `q` of `port`, both ways, with what the port verifies.
    pub fn of(port: &Port, q: u16) -> DataQueues {
        DataQueues {
            rx: port.rx_queue(q),
            tx: port.tx_queue(q),
            rx_ip_checksum: port.rx_ip_checksum(),
        }
    }
}

/// Where a worker reads replication frames: RX queue `q` of the
/// replication port, plus, with several shards, the inbox other workers
/// steer this shard's frames into (a NIC that cannot steer by shard may
/// deliver a frame to any queue; each shard's frames keep their order as
/// long as the NIC hashes them all to one queue, which a flow of constant
/// MACs and EtherType gives).
pub struct ReplSource {
    pub rx: RxQueue,
    pub inbox: Option<Arc<MbufRing>>,
}

/// What a new primary announces on its data ports.
#[derive(Clone, Debug, Default)]
pub struct Announce {
    /// Gratuitous ARP for these addresses from `vmac` (shard 0 sends them).
    pub vmac: Option<MacAddr>,
    /// Virtual IP per side, indexed by [`Side`].
    pub vips: [Option<Ipv4Addr>; 2],
}

/// Replication settings of a worker.
#[derive(Clone, Debug)]
pub struct ReplSettings {
    pub node_id: u32,
    /// Shadow ring entries.
    pub shadow: usize,
    /// Ingress window entries per data port.
    pub window: usize,
    /// KEEPALIVE when a shard sent nothing for this long.
    pub keepalive_ns: u64,
    /// Extra packets per shard to resend at takeover (`takeover_replay`).
    pub replay: u64,
    /// Largest batch frame of small packets' records (0: one frame per
    /// packet).
    pub batch_bytes: usize,
    /// An AUDIT of one slice of the function's state this often (0: none).
    pub audit_ns: u64,
    /// Flow control ([`crate::replication::flow`]): a primary shard runs at
    /// most this many records ahead of its slowest synchronized backup, and
    /// a backup acknowledges every quarter of it (0: off, no ACKs).
    pub flow_window: u64,
    /// How long a silent backup's last acknowledgment holds the primary.
    pub flow_hold_ns: u64,
    /// How long a checkpoint's close may hold the data ports when its
    /// rounds do not converge (`checkpoint::CHECKPOINT_HOLD_NS` by default;
    /// 0: only a close small enough to go at once).
    pub checkpoint_hold_ns: u64,
    pub announce: Announce,
}

/// The replication side of a worker.
pub struct ReplPath {
    pub tx: TxQueue,
    pub source: ReplSource,
    /// Every shard's inbox, indexed by shard (empty with one shard).
    pub steer: Vec<Option<Arc<MbufRing>>>,
    /// With steering: the node's ledger of packets in transit between
    /// shards ([`crate::replication::handoff`]).
    pub handoff: Option<Arc<HandoffLedger<(Side, Mbuf)>>>,
    pub encap: Encap,
    pub headers: Arc<Mempool>,
    pub clones: Arc<Mempool>,
    /// For frames the worker makes itself (announcements).
    pub pool: Arc<Mempool>,
    pub settings: ReplSettings,
    pub signals: Arc<NodeSignals>,
}

/// Everything a worker needs, moved onto its lcore.
pub struct Worker<F: NetworkFunction> {
    pub shard: u16,
    pub nf: F,
    /// Indexed by [`Side`].
    pub data: [DataQueues; 2],
    pub burst: usize,
    pub idle_sleep_us: u64,
    pub ownership: Arc<TxOwnership>,
    pub shared: Arc<WorkerShared>,
    pub quit: Arc<AtomicBool>,
    /// `None` for a standalone node.
    pub repl: Option<ReplPath>,
    pub commands: Option<Receiver<WorkerCmd>>,
    /// With several shards and a function that keeps state: the inboxes
    /// packets are steered through ([`steer`]).
    pub steering: Option<Steering>,
}

/// Per-iteration scratch space, allocated once per worker.
pub(crate) struct Scratch {
    pub rx: RxBurst<MAX_BURST>,
    /// Packets on their way through the function, in order.
    pub pending: Vec<Mbuf>,
    /// Positions in `pending` of packets dropped before replication.
    pub dropped: Vec<usize>,
    /// Replication frames received this iteration.
    pub frames: Vec<Mbuf>,
    /// Packets carried by each replication frame of a burst.
    pub frame_pkts: Vec<u16>,
    /// With steering: the owner of each packet of `pending`.
    pub owners: Vec<Owner>,
    /// With steering: what other shards steered here this iteration.
    pub inbox: Vec<Mbuf>,
    pub repl_tx: TxBatch<MAX_BURST>,
    /// Fresh mbufs for replication batch frames.
    pub batch_stash: MbufStash,
    pub tx: [TxBatch<MAX_BURST>; 2],
    pub latency: Histogram<u64>,
}

/// [`Worker::verdict_in_place`]'s answer.
pub(crate) enum InPlace {
    /// Leaves on this side, rewritten where it lies.
    Out(Side),
    /// Dropped or consumed (counted).
    Done,
    /// For the general path, on a frame of its own.
    General,
}

/// A worker's replication state (not shared: the worker alone touches it).
pub(crate) struct ReplState {
    pub mode: Mode,
    pub epoch: u32,
    /// Primary: last sequence assigned.
    pub next_seq: u64,
    /// Primary: highest sequence whose egress was handed to the NIC.
    pub tx_done: u64,
    /// Primary: `tx_done` as last told to the backups.
    pub tx_done_sent: u64,
    /// Primary: when the last replication frame left (local ns).
    pub last_frame_ns: u64,
    /// Primary: added to the local clock (continues the old primary's clock
    /// after a takeover).
    pub time_offset: u64,
    /// Backup: the stream's continuity.
    pub tracker: SeqTracker,
    /// Backup: highest `tx_done` heard.
    pub tx_done_seen: u64,
    /// Backup: the primary's clock in the last frame.
    pub last_time_ns: u64,
    pub shadow: ShadowRing<Egress>,
    /// Backup: the batch frames holding the shadow ring's in-place egress.
    pub held: HeldBatches,
    /// Backup: fresh mbufs for the records of batch frames.
    pub record_stash: MbufStash,
    /// Backup: what the shadow ring released, to free in one call.
    pub freed: Vec<Mbuf>,
    pub windows: [IngressWindow<Mbuf>; 2],
    pub macs: [MacTable; 2],
    pub switchover_for: u32,
    /// Primary: when the next AUDIT is due (local ns), and its slice.
    pub next_audit_ns: u64,
    pub audit_slice: u32,
    /// Primary: busy iterations until the replication port is read again
    /// for a higher epoch and the backups' acknowledgments.
    pub epoch_watch_in: u32,
    /// Primary: how far this shard may run ahead of its backups, the lag of
    /// the slowest one, the time the gate held the data ports back, and
    /// when (TSC) the current hold was last seen (0: not held).
    pub flow: FlowGate,
    pub flow_lag: u64,
    pub flow_held_ns: u64,
    pub held_at: u64,
    /// Backup: when to acknowledge, and how many ACKs left.
    pub ack: AckPacer,
    pub acks_tx: u64,
    /// The checkpoint protocol's state, either side.
    pub ckpt: CheckpointState,
    /// Primary after a takeover: its first egress is still to be stamped
    /// (`takeover_first_egress_ns`), whatever it is: a shadow entry
    /// resent, an unreplicated packet, or new ingress.
    pub first_egress_due: bool,
}

impl<F: NetworkFunction> Worker<F> {
    /// Runs until `quit` is set. Everything still held is freed on return.
    pub fn run(mut self) {
        let mut s = Scratch {
            rx: RxBurst::default(),
            pending: Vec::with_capacity(MAX_BURST),
            dropped: Vec::with_capacity(MAX_BURST),
            frames: Vec::with_capacity(MAX_BURST),
            frame_pkts: Vec::with_capacity(MAX_BURST),
            owners: Vec::with_capacity(MAX_BURST),
            inbox: Vec::with_capacity(MAX_BURST),
            repl_tx: TxBatch::default(),
            batch_stash: MbufStash::new(8),
            tx: [TxBatch::default(), TxBatch::default()],
            latency: new_latency_histogram(),
        };
        let clock = TscClock::new(tsc_hz());
        let mut st = self.repl.as_ref().map(|r| ReplState {
            mode: Mode::Backup,
            epoch: 0,
            next_seq: 0,
            tx_done: 0,
            tx_done_sent: 0,
            last_frame_ns: 0,
            time_offset: 0,
            tracker: SeqTracker::new().joinable(F::STATELESS),
            tx_done_seen: 0,
            last_time_ns: 0,
            shadow: ShadowRing::new(r.settings.shadow),
            held: HeldBatches::new(),
            record_stash: MbufStash::new(32),
            freed: Vec::with_capacity(r.settings.shadow.min(4096)),
            windows: [
                IngressWindow::new(r.settings.window),
                IngressWindow::new(r.settings.window),
            ],
            macs: [MacTable::new(256), MacTable::new(256)],
            switchover_for: 0,
            next_audit_ns: 0,
            audit_slice: 0,
            epoch_watch_in: 0,
            flow: FlowGate::new(r.settings.flow_window, r.settings.flow_hold_ns),
            flow_lag: 0,
            flow_held_ns: 0,
            held_at: 0,
            ack: AckPacer::new((r.settings.flow_window / 4).max(1), r.settings.keepalive_ns),
            acks_tx: 0,
            first_egress_due: false,
            ckpt: CheckpointState::default(),
        });
        let publish_ticks = clock.ticks(LATENCY_PUBLISH_NS);
        let idle = Duration::from_micros(self.idle_sleep_us);
        let mut last_publish = rdtsc();

        while !self.quit.load(Ordering::Relaxed) {
            bump(&self.shared.repl.loops, 1);
            if self.shared.describe_request.load(Ordering::Relaxed) {
                self.shared.describe_request.store(false, Ordering::Relaxed);
                if let Ok(mut d) = self.shared.description.lock() {
                    *d = Some(self.nf.describe(256));
                }
            }
            if let Some(st) = st.as_mut() {
                self.poll_commands(st, &mut s, &clock);
            }
            if !self.shared.forwarding.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(1));
                continue;
            }
            let busy = match st.as_mut() {
                None => self.poll_standalone(&mut s, &clock),
                Some(st) => {
                    let fence = self
                        .repl
                        .as_ref()
                        .map_or(0, |r| r.signals.fence_epoch.load(Ordering::Relaxed));
                    if st.mode == Mode::Primary && fence > st.epoch {
                        // Another node is primary with a higher epoch: stop
                        // transmitting now, before the control thread knows.
                        self.become_backup(fence, true, st, &mut s);
                    }
                    let busy = match st.mode {
                        Mode::Primary => self.poll_primary(st, &mut s, &clock),
                        Mode::Backup => self.poll_backup(st, &mut s, &clock),
                    };
                    self.publish(st);
                    busy
                }
            };
            if busy {
                bump(&self.shared.counters.busy_polls, 1);
            } else {
                bump(&self.shared.counters.idle_polls, 1);
                if !idle.is_zero() {
                    std::thread::sleep(idle);
                }
            }
            let now = rdtsc();
            if now.wrapping_sub(last_publish) > publish_ticks && self.shared.latency.try_publish(&mut s.latency) {
                last_publish = now;
            }
        }
        self.shared.latency.try_publish(&mut s.latency);
    }

    fn poll_commands(&mut self, st: &mut ReplState, s: &mut Scratch, clock: &TscClock) {
        while let Some(Ok(cmd)) = self.commands.as_ref().map(|rx| rx.try_recv()) {
            match cmd {
                WorkerCmd::BecomePrimary { epoch } => self.become_primary(epoch, st, s, clock),
                WorkerCmd::BecomeBackup { epoch, diverged } => self.become_backup(epoch, diverged, st, s),
                WorkerCmd::HandOver { target } => self.hand_over(target, st, s, clock),
                WorkerCmd::Stall { ms } => std::thread::sleep(Duration::from_millis(ms)),
            }
        }
    }

    /// One iteration without replication. Returns whether anything arrived.
    fn poll_standalone(&mut self, s: &mut Scratch, clock: &TscClock) -> bool {
        // One TSC read starts the iteration; each busy burst ends with one
        // more, which also starts the next burst's latency window.
        let mut t = rdtsc();
        let mut busy = false;
        let shard = self.shard as usize;
        for side in Side::ALL {
            let n = self.data[side.index()]
                .rx
                .rx_burst_n(&mut s.rx, self.burst.clamp(1, MAX_BURST));
            if n == 0 {
                continue;
            }
            busy = true;
            if !self.ownership.owns(side, shard) {
                bump(&self.shared.counters.ignored_not_owner, n as u64);
                s.rx.clear();
                continue;
            }
            self.shared.counters.rx(side, n as u64);
            let ctx = PacketCtx::new(side, clock.ns(t));
            self.prefetch_burst(s.rx.as_slice(), side);
            if self.steering.is_some() && !F::BURST_VERDICT {
                while let Some(m) = s.rx.pop() {
                    s.owners.push(self.owner_of(&m, side, 0));
                    s.pending.push(m);
                }
                self.dispatch_pending(&ctx, s);
            } else {
                s.rx.drain_into(&mut s.pending);
                self.process_pending(&ctx, s);
            }
            self.transmit(s);
            let end = rdtsc();
            s.latency.saturating_record(clock.ns(end.wrapping_sub(t)).max(1));
            t = end;
        }
        if self.take_inbox(s) > 0 {
            busy = true;
            let now_ns = clock.ns(t);
            let mut inbox = std::mem::take(&mut s.inbox);
            for m in inbox.drain(..) {
                let (side, flags) = steer::untag(&m);
                let ctx = self.ctx_of(&m, &PacketCtx::with_flags(side, now_ns, flags));
                self.process_one(m, &ctx, &mut s.tx);
            }
            s.inbox = inbox;
            self.transmit(s);
        }
        busy
    }

    /// The function's prefetch passes over a burst received on `side`,
    /// before its first packet is processed.
    #[inline]
    pub(crate) fn prefetch_burst(&self, pkts: &[Mbuf], side: Side) {
        for stage in 0..self.nf.prefetch_stages() {
            for m in pkts {
                self.nf.prefetch(m.data(), side, stage);
            }
        }
    }

    /// The context of packet `m` of a burst received with `ctx`: whether
    /// the NIC it came in on vouched for its IPv4 header checksum. Only on
    /// packets from a data port (a replica's word is its record's flag).
    #[inline(always)]
    fn ctx_of(&self, m: &Mbuf, ctx: &PacketCtx) -> PacketCtx {
        with_nic_checksum(self.data[ctx.ingress.index()].rx_ip_checksum, m, ctx)
    }

    /// The function's fast path over a burst's packets in order, up to the
    /// first it declines (that one and the rest then go one by one, so
    /// state changes keep the packets' order): each taken packet's egress
    /// in `outs`; returns how many were taken. A burst the fast path takes
    /// whole, all to one side, then moves to its TX batch in one copy.
    #[inline(always)]
    fn fast_prefix(&mut self, pkts: &mut [Mbuf], ctx: &PacketCtx, outs: &mut [Side; MAX_BURST]) -> usize {
        let mut k = 0;
        // Read once: the function may change, the port does not.
        let nic = self.data[ctx.ingress.index()].rx_ip_checksum;
        for (m, out) in pkts.iter_mut().zip(outs.iter_mut()) {
            let ctx = with_nic_checksum(nic, m, ctx);
            match self.fast_path(m, &ctx) {
                Some(o) => *out = o,
                None => break,
            }
            k += 1;
        }
        bump(&self.shared.counters.fast, k as u64);
        k
    }

    /// Runs the function over `s.pending` and sorts the survivors into one
    /// TX batch per egress port.
    #[inline]
    fn process_pending(&mut self, ctx: &PacketCtx, s: &mut Scratch) {
        if F::BURST_VERDICT {
            let verdict = self.nf.process(&mut Frame::new_in_range(&mut [], 0, 0), ctx);
            match self.egress_of(verdict, s.pending.len() as u64) {
                Some(out) => append_or_drop(&mut s.tx[out.index()], &mut s.pending, &self.shared.counters),
                None => s.pending.clear(),
            }
            return;
        }
        let n = s.pending.len();
        let mut outs = [Side::Inside; MAX_BURST];
        let k = self.fast_prefix(&mut s.pending, ctx, &mut outs);
        if k == n {
            if let Some(out) = same_side(&outs[..n]) {
                append_or_drop(&mut s.tx[out.index()], &mut s.pending, &self.shared.counters);
                return;
            }
        }
        let mut rest = s.pending.drain(..);
        for (out, m) in outs[..k].iter().zip(rest.by_ref()) {
            push_or_drop(&mut s.tx[out.index()], m, &self.shared.counters);
        }
        // The packet the fast path declined goes straight to the general
        // path; those after it may be the fast path's again.
        if let Some(mut m) = rest.next() {
            let ctx = self.ctx_of(&m, ctx);
            let verdict = self.verdict_general(&mut m, &ctx);
            self.settle(verdict, m, &mut s.tx);
        }
        for m in rest {
            let ctx = self.ctx_of(&m, ctx);
            self.process_one(m, &ctx, &mut s.tx);
        }
    }

    /// The function over one packet; the packet ends in a TX batch or freed.
    #[inline]
    fn process_one(&mut self, mut m: Mbuf, ctx: &PacketCtx, tx: &mut [TxBatch<MAX_BURST>; 2]) {
        let verdict = self.verdict(&mut m, ctx);
        self.settle(verdict, m, tx);
    }

    /// A packet's verdict carried out: the packet ends in a TX batch or
    /// freed, counted.
    #[inline]
    fn settle(&self, verdict: Verdict, m: Mbuf, tx: &mut [TxBatch<MAX_BURST>; 2]) {
        if let Some(out) = self.egress_of(verdict, 1) {
            push_or_drop(&mut tx[out.index()], m, &self.shared.counters);
        }
    }

    /// Where `n` packets a verdict was given on leave, if they do; what it
    /// dropped, replaced or consumed is counted.
    #[inline]
    fn egress_of(&self, verdict: Verdict, n: u64) -> Option<Side> {
        let counters = &self.shared.counters;
        match verdict {
            Verdict::Forward(out) => Some(out),
            Verdict::Replaced { out, dropped } => {
                counters.drop(dropped, n);
                Some(out)
            }
            Verdict::Drop(r) => {
                counters.drop(r, n);
                None
            }
            Verdict::Consumed => {
                bump(&counters.consumed, n);
                None
            }
        }
    }

    /// The function's fast path ([`NetworkFunction::fast`]) over one
    /// single-segment packet of a burst: its egress, or None (uncounted: the
    /// burst counts what it took).
    #[inline(always)]
    fn fast_path(&mut self, m: &mut Mbuf, ctx: &PacketCtx) -> Option<Side> {
        if F::BURST_VERDICT || m.nb_segs() != 1 {
            return None;
        }
        self.nf.fast(m.data_mut(), ctx)
    }

    /// The function's verdict on one packet (rewriting it in place): its
    /// fast path's when it takes the packet, else its general path's.
    #[inline]
    fn verdict(&mut self, m: &mut Mbuf, ctx: &PacketCtx) -> Verdict {
        if F::BURST_VERDICT {
            return self.nf.process(&mut Frame::new_in_range(&mut [], 0, 0), ctx);
        }
        if m.nb_segs() != 1 {
            return Verdict::Drop(DropReason::MultiSegment);
        }
        if let Some(out) = self.nf.fast(m.data_mut(), ctx) {
            bump(&self.shared.counters.fast, 1);
            return Verdict::Forward(out);
        }
        self.verdict_general(m, ctx)
    }

    /// The general path's verdict on a packet the fast path declined.
    #[inline]
    fn verdict_general(&mut self, m: &mut Mbuf, ctx: &PacketCtx) -> Verdict {
        if m.nb_segs() != 1 {
            return Verdict::Drop(DropReason::MultiSegment);
        }
        let mut frame = m.frame();
        self.nf.process_general(&mut frame, ctx)
    }

    /// The verdict on a frame that stays where it lies (a backup's record
    /// inside its batch frame), as far as it needs no mbuf: its egress
    /// rewritten in place, or nothing to keep (counted), or the general
    /// path's to decide on a copy (nothing changed).
    #[inline]
    fn verdict_in_place(&mut self, data: &mut [u8], ctx: &PacketCtx) -> InPlace {
        if F::BURST_VERDICT {
            let verdict = self.nf.process(&mut Frame::new_in_range(&mut [], 0, 0), ctx);
            return self.egress_of(verdict, 1).map_or(InPlace::Done, InPlace::Out);
        }
        match self.nf.fast(data, ctx) {
            Some(out) => {
                bump(&self.shared.counters.fast, 1);
                InPlace::Out(out)
            }
            None => InPlace::General,
        }
    }

    /// Sends each egress batch if this node owns the queue; frees it if not.
    /// Returns (sent, refused by the NIC).
    #[inline]
    fn transmit(&mut self, s: &mut Scratch) -> (usize, usize) {
        let shard = self.shard as usize;
        let (mut sent, mut refused) = (0, 0);
        for out in Side::ALL {
            let batch = &mut s.tx[out.index()];
            if batch.is_empty() {
                continue;
            }
            if !self.ownership.owns(out, shard) {
                let n = batch.clear();
                bump(&self.shared.counters.ignored_not_owner, n as u64);
                continue;
            }
            let r = self.data[out.index()].tx.tx_burst(batch);
            self.shared.counters.tx(out, r.sent as u64);
            sent += r.sent;
            refused += r.refused;
            if r.refused > 0 {
                self.shared.counters.drop(DropReason::TxRefused, r.refused as u64);
            }
        }
        (sent, refused)
    }
}

/// Removes the elements at `at` (ascending positions) from `v`, keeping
/// the others in order.
pub(crate) fn remove_at<T>(v: &mut Vec<T>, at: &[usize]) {
    let mut next = at.iter().copied().peekable();
    let mut i = 0;
    v.retain(|_| {
        let gone = next.next_if_eq(&i).is_some();
        i += 1;
        !gone
    });
}

/// Whether the NIC vouched for `m`'s IPv4 header checksum: `nic` (its
/// port verifies checksums) and the device found it good. The one test
/// of it: the primary's replica flag and its function's context must agree.
#[inline(always)]
pub(crate) fn nic_vouched(nic: bool, m: &Mbuf) -> bool {
    nic && m.rx_ip_checksum_good()
}

/// `ctx` for packet `m`, its header checksum vouched for by the NIC
/// ([`nic_vouched`]).
#[inline(always)]
fn with_nic_checksum(nic: bool, m: &Mbuf, ctx: &PacketCtx) -> PacketCtx {
    PacketCtx {
        ip_checksum_ok: ctx.ip_checksum_ok || nic_vouched(nic, m),
        ..*ctx
    }
}

/// The side every one of `outs` goes to, if they all go to one (None for
/// an empty burst).
#[inline]
fn same_side(outs: &[Side]) -> Option<Side> {
    let first = *outs.first()?;
    outs.iter().all(|o| *o == first).then_some(first)
}

/// Moves all of `pkts` to `batch`. A batch holds a whole burst, so none is
/// left; count if some ever are.
#[inline]
fn append_or_drop(batch: &mut TxBatch<MAX_BURST>, pkts: &mut Vec<Mbuf>, counters: &WorkerCounters) {
    batch.append_vec(pkts);
    if !pkts.is_empty() {
        counters.drop(DropReason::TxRefused, pkts.len() as u64);
        pkts.clear();
    }
}

#[inline]
fn push_or_drop(batch: &mut TxBatch<MAX_BURST>, m: Mbuf, counters: &WorkerCounters) {
    // A batch holds a whole burst, so it cannot overflow; count if it does.
    if batch.push(m).is_err() {
        counters.drop(DropReason::TxRefused, 1);
    }
}

#[cfg(test)]
mod tests {
    use super::remove_at;

    #[test]
    fn remove_at_takes_out_exactly_the_listed_positions_and_keeps_the_order() {
        let cases: [(&[usize], &[u32]); 6] = [
            (&[], &[0, 1, 2, 3, 4]),
            (&[0], &[1, 2, 3, 4]),
            (&[2], &[0, 1, 3, 4]),
            (&[4], &[0, 1, 2, 3]),
            (&[1, 2, 4], &[0, 3]),
            (&[0, 1, 2, 3, 4], &[]),
        ];
        for (at, left) in cases {
            let mut v: Vec<u32> = (0..5).collect();
            remove_at(&mut v, at);
            assert_eq!(v, left, "removing {at:?}");
        }
    }
}
