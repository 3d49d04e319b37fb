//! Flow control from the backups to the primary.
//!
//! A backup that cannot follow the stream loses frames at its replication
//! port, and with them its synchronization: the pair then has no backup
//! left, only counters. So each backup acknowledges, per shard, the last
//! sequence it processed (ACK frames on the replication link, at least every
//! quarter window), and a primary keeps each shard at most `window` records
//! ahead of the slowest synchronized backup that acknowledged recently. What
//! the primary does not take stays in its NIC's RX ring — the NIC drops it
//! there, counted, when the ring is full — instead of being lost on the
//! replication link after the primary already processed it. The pair runs at
//! the rate of its slower node and the backup stays eligible.
//!
//! A backup that stops acknowledging (dead, descheduled, unplugged) holds the
//! primary for at most `hold_ns`, after which the primary runs ahead of it:
//! flow control never turns a failed backup into a failed primary. A backup
//! that is not synchronized is not waited for (it cannot take over anyway).
//!
//! The acknowledgments land in one node-wide [`AckBoard`], whichever worker
//! reads them: a NIC that cannot steer replication frames by shard may
//! deliver every backup's ACKs to one queue. Each worker keeps a [`FlowGate`]
//! over the board: the highest sequence it may assign, refreshed when it
//! runs short and every few iterations, so the fast path pays one compare.

use std::sync::atomic::{AtomicU64, Ordering};

/// Backups the board follows (acknowledgments of more are not recorded).
pub const MAX_BACKUPS: usize = 4;
/// Shards the board follows (the configuration's limit on workers).
pub const MAX_SHARDS: usize = 64;

/// In a cell's sequence: the backup's shard was not synchronized.
const UNSYNCED: u64 = 1 << 63;

#[derive(Default)]
struct AckCell {
    /// Last sequence processed, with [`UNSYNCED`].
    seq: AtomicU64,
    /// Local ns when it arrived (0: never).
    at_ns: AtomicU64,
    /// The checkpoint the backup installs (high 32 bits) and the pieces of
    /// it installed (low 32).
    ckpt: AtomicU64,
}

/// The backups' acknowledgments per shard, as the primary received them.
/// Lock-free: any worker records, each worker reads its own shard.
pub struct AckBoard {
    /// Node id of each backup slot (0: free).
    nodes: [AtomicU64; MAX_BACKUPS],
    /// `cells[slot * MAX_SHARDS + shard]`.
    cells: Box<[AckCell]>,
}

impl Default for AckBoard {
    fn default() -> AckBoard {
        AckBoard {
            nodes: Default::default(),
            cells: (0..MAX_BACKUPS * MAX_SHARDS).map(|_| AckCell::default()).collect(),
        }
    }
}

/// A backup's last acknowledgment of a shard.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AckEntry {
    pub node: u32,
    pub seq: u64,
    pub synced: bool,
    /// Local ns when it arrived.
    pub at_ns: u64,
}

/// Why an acknowledgment was not recorded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AckRefused {
    /// A shard beyond [`MAX_SHARDS`].
    Shard,
    /// Node id 0, or [`MAX_BACKUPS`] other backups already hold the slots.
    Node,
}

impl AckBoard {
    /// Records that backup `node` processed shard `shard` up to `seq`
    /// (`synced`: with no gap since sequence 1), heard at local `now_ns`.
    pub fn record(&self, node: u32, shard: u16, seq: u64, synced: bool, now_ns: u64) -> Result<(), AckRefused> {
        let shard = shard as usize;
        if shard >= MAX_SHARDS {
            return Err(AckRefused::Shard);
        }
        let slot = self.slot_of(node).ok_or(AckRefused::Node)?;
        let cell = &self.cells[slot * MAX_SHARDS + shard];
        let flag = if synced { 0 } else { UNSYNCED };
        cell.seq.store((seq & !UNSYNCED) | flag, Ordering::Relaxed);
        // A reader that sees this time sees the sequence stored before it.
        cell.at_ns.store(now_ns.max(1), Ordering::Release);
        Ok(())
    }

    /// Backup `node` installed `pieces` pieces of checkpoint `id` of
    /// `shard` (after [`Self::record`] of the same ACK).
    pub fn record_progress(&self, node: u32, shard: u16, id: u32, pieces: u32) {
        if let Some(slot) = self.slot_of(node).filter(|_| (shard as usize) < MAX_SHARDS) {
            let v = ((id as u64) << 32) | pieces as u64;
            self.cells[slot * MAX_SHARDS + shard as usize]
                .ckpt
                .store(v, Ordering::Relaxed);
        }
    }

    /// The fewest pieces of checkpoint `id` of `shard` any backup installing
    /// it has reported; None when none has.
    pub fn progress(&self, shard: u16, id: u32) -> Option<u32> {
        let shard = shard as usize;
        let slots = if shard < MAX_SHARDS { MAX_BACKUPS } else { 0 };
        (0..slots)
            .filter(|slot| self.nodes[*slot].load(Ordering::Relaxed) != 0)
            .map(|slot| self.cells[slot * MAX_SHARDS + shard].ckpt.load(Ordering::Relaxed))
            .filter(|v| (v >> 32) as u32 == id)
            .map(|v| v as u32)
            .min()
    }

    /// The lowest sequence acknowledged for `shard` by a synchronized backup
    /// heard within `hold_ns` of `now_ns`; `None` when there is none.
    pub fn lowest_fresh(&self, shard: u16, now_ns: u64, hold_ns: u64) -> Option<u64> {
        self.entries(shard)
            .filter(|e| e.synced && now_ns.saturating_sub(e.at_ns) <= hold_ns)
            .map(|e| e.seq)
            .min()
    }

    /// Whether a backup heard within `fresh_ns` of `now_ns` says `shard` is
    /// not synchronized there (no allocation: asked on a primary's loop).
    pub fn unsynced_fresh(&self, shard: u16, now_ns: u64, fresh_ns: u64) -> bool {
        self.entries(shard)
            .any(|e| !e.synced && now_ns.saturating_sub(e.at_ns) <= fresh_ns)
    }

    /// Every backup's last acknowledgment of `shard`, as heard (for
    /// `show sync`): whether it is waited for is [`Self::lowest_fresh`]'s
    /// business.
    pub fn heard(&self, shard: u16) -> Vec<AckEntry> {
        self.entries(shard).collect()
    }

    /// The acknowledgments of `shard` the board holds, slot by slot (none
    /// for a shard past its end).
    fn entries(&self, shard: u16) -> impl Iterator<Item = AckEntry> + '_ {
        let shard = shard as usize;
        let slots = if shard < MAX_SHARDS { MAX_BACKUPS } else { 0 };
        self.nodes[..slots].iter().enumerate().filter_map(move |(slot, node)| {
            let node = node.load(Ordering::Relaxed);
            let cell = &self.cells[slot * MAX_SHARDS + shard];
            let at_ns = cell.at_ns.load(Ordering::Acquire);
            if node == 0 || at_ns == 0 {
                return None;
            }
            let seq = cell.seq.load(Ordering::Relaxed);
            Some(AckEntry {
                node: node as u32,
                seq: seq & !UNSYNCED,
                synced: seq & UNSYNCED == 0,
                at_ns,
            })
        })
    }

    /// The slot of `node`, claimed on its first acknowledgment.
    fn slot_of(&self, node: u32) -> Option<usize> {
        if node == 0 {
            return None;
        }
        let id = node as u64;
        if let Some(i) = self.nodes.iter().position(|n| n.load(Ordering::Relaxed) == id) {
            return Some(i);
        }
        for (i, n) in self.nodes.iter().enumerate() {
            match n.compare_exchange(0, id, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return Some(i),
                // Another worker claimed this slot for the same node.
                Err(other) if other == id => return Some(i),
                Err(_) => {}
            }
        }
        None
    }
}

/// A primary worker's view of the board for its shard.
#[derive(Clone, Copy, Debug)]
pub struct FlowGate {
    /// Records a shard may run ahead of its slowest backup (0: off).
    pub window: u64,
    /// How long a backup's last acknowledgment holds the primary.
    pub hold_ns: u64,
    /// The highest sequence this shard may assign, as of the last refresh.
    limit: u64,
}

impl FlowGate {
    pub fn new(window: u64, hold_ns: u64) -> FlowGate {
        FlowGate {
            window,
            hold_ns,
            limit: u64::MAX,
        }
    }

    /// Records this shard may replicate after sequence `last` without
    /// asking the board again.
    #[inline]
    pub fn credit(&self, last: u64) -> u64 {
        self.limit.saturating_sub(last)
    }

    /// Re-reads the board. Returns the lag of the slowest fresh backup
    /// behind `last` (0 when none holds the shard).
    pub fn refresh(&mut self, board: &AckBoard, shard: u16, last: u64, now_ns: u64) -> u64 {
        if self.window == 0 {
            self.limit = u64::MAX;
            return 0;
        }
        match board.lowest_fresh(shard, now_ns, self.hold_ns) {
            Some(acked) => {
                self.limit = acked.saturating_add(self.window);
                last.saturating_sub(acked)
            }
            None => {
                self.limit = u64::MAX;
                0
            }
        }
    }
}

/// When a backup acknowledges: after every `every` records processed, when
/// its stream runs dry with something unacknowledged, and at least every
/// `refresh_ns` while it follows a primary (an idle pair stays fresh, so the
/// first burst after a pause is paced too).
#[derive(Clone, Copy, Debug)]
pub struct AckPacer {
    pub every: u64,
    pub refresh_ns: u64,
    acked: u64,
    at_ns: u64,
}

impl AckPacer {
    pub fn new(every: u64, refresh_ns: u64) -> AckPacer {
        AckPacer {
            every: every.max(1),
            refresh_ns,
            acked: 0,
            at_ns: 0,
        }
    }

    /// Whether to acknowledge `last` now; `drained`: the replication queue
    /// had nothing more.
    #[inline]
    pub fn due(&self, last: u64, drained: bool, now_ns: u64) -> bool {
        let behind = last.saturating_sub(self.acked);
        behind >= self.every || (drained && behind > 0) || now_ns.saturating_sub(self.at_ns) >= self.refresh_ns
    }

    /// Whether `refresh_ns` passed since the last acknowledgment.
    #[inline]
    pub fn refresh_due(&self, now_ns: u64) -> bool {
        now_ns.saturating_sub(self.at_ns) >= self.refresh_ns
    }

    /// An acknowledgment of `last` left at `now_ns`.
    pub fn sent(&mut self, last: u64, now_ns: u64) {
        self.acked = last;
        self.at_ns = now_ns;
    }

    /// The stream starts over (a new primary, a new epoch).
    pub fn reset(&mut self) {
        self.acked = 0;
        self.at_ns = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn a_checkpoints_progress_is_the_slowest_of_the_backups_installing_it() {
        let b = AckBoard::default();
        for node in [2, 3, 4] {
            b.record(node, 0, 0, false, MS).unwrap();
        }
        assert_eq!(b.progress(0, 7), None, "nobody installs 7 yet");
        b.record_progress(2, 0, 7, 300);
        b.record_progress(3, 0, 7, 128);
        b.record_progress(4, 0, 6, 10);
        b.record_progress(4, 1, 7, 5);
        assert_eq!(
            b.progress(0, 7),
            Some(128),
            "node 4 installs another checkpoint, and shard 1 is not 0"
        );
        assert_eq!(b.progress(1, 7), Some(5));
        assert_eq!(b.progress(MAX_SHARDS as u16, 7), None);
    }

    #[test]
    fn the_lowest_fresh_synchronized_acknowledgment_of_a_shard_wins() {
        let b = AckBoard::default();
        b.record(2, 0, 500, true, 10 * MS).unwrap();
        b.record(3, 0, 300, true, 10 * MS).unwrap();
        b.record(3, 1, 900, true, 10 * MS).unwrap();
        assert_eq!(b.lowest_fresh(0, 10 * MS, MS), Some(300));
        assert_eq!(b.lowest_fresh(1, 10 * MS, MS), Some(900));
        assert_eq!(b.lowest_fresh(2, 10 * MS, MS), None);
    }

    #[test]
    fn the_board_tells_what_each_backup_last_acknowledged_of_a_shard() {
        let b = AckBoard::default();
        assert_eq!(b.heard(0), vec![]);
        b.record(2, 0, 500, true, 10 * MS).unwrap();
        b.record(3, 1, 90, false, 11 * MS).unwrap();
        b.record(3, 0, 70, false, 12 * MS).unwrap();
        let e = |node, seq, synced, at_ns| AckEntry {
            node,
            seq,
            synced,
            at_ns,
        };
        assert_eq!(b.heard(0), vec![e(2, 500, true, 10 * MS), e(3, 70, false, 12 * MS)]);
        assert_eq!(b.heard(1), vec![e(3, 90, false, 11 * MS)]);
        assert_eq!(b.heard(MAX_SHARDS as u16), vec![]);
    }

    #[test]
    fn a_backup_silent_for_longer_than_the_hold_is_not_waited_for() {
        let b = AckBoard::default();
        b.record(2, 0, 100, true, 10 * MS).unwrap();
        b.record(3, 0, 700, true, 12 * MS).unwrap();
        assert_eq!(b.lowest_fresh(0, 11 * MS, MS), Some(100));
        assert_eq!(b.lowest_fresh(0, 11 * MS + 1, MS), Some(700));
        assert_eq!(b.lowest_fresh(0, 13 * MS + 1, MS), None);
    }

    #[test]
    fn an_unsynchronized_backup_is_not_waited_for() {
        let b = AckBoard::default();
        b.record(2, 0, 100, false, 10 * MS).unwrap();
        assert_eq!(b.lowest_fresh(0, 10 * MS, MS), None);
        b.record(2, 0, 120, true, 10 * MS).unwrap();
        assert_eq!(b.lowest_fresh(0, 10 * MS, MS), Some(120));
    }

    #[test]
    fn the_board_refuses_node_zero_a_fifth_backup_and_a_shard_past_its_end() {
        let b = AckBoard::default();
        assert_eq!(b.record(0, 0, 1, true, MS), Err(AckRefused::Node));
        for node in 1..=MAX_BACKUPS as u32 {
            b.record(node, 0, 10 + node as u64, true, MS).unwrap();
        }
        assert_eq!(b.record(9, 0, 1, true, MS), Err(AckRefused::Node));
        assert_eq!(b.record(1, 0, 50, true, MS), Ok(()), "a known backup keeps its slot");
        assert_eq!(b.record(1, MAX_SHARDS as u16, 1, true, MS), Err(AckRefused::Shard));
        assert_eq!(b.lowest_fresh(0, MS, MS), Some(12));
    }

    #[test]
    fn a_gate_allows_exactly_the_window_past_the_slowest_acknowledgment() {
        let b = AckBoard::default();
        let mut g = FlowGate::new(64, MS);
        assert_eq!(g.credit(1000), u64::MAX - 1000, "no backup heard: no limit");
        b.record(2, 0, 1000, true, 5 * MS).unwrap();
        assert_eq!(g.refresh(&b, 0, 1040, 5 * MS), 40);
        assert_eq!(g.credit(1040), 24);
        assert_eq!(g.credit(1064), 0);
        assert_eq!(g.credit(1070), 0);
        // The backup goes silent: after the hold the gate opens.
        assert_eq!(g.refresh(&b, 0, 1064, 6 * MS + 1), 0);
        assert_eq!(g.credit(1064), u64::MAX - 1064);
    }

    #[test]
    fn a_gate_with_window_zero_never_limits() {
        let b = AckBoard::default();
        b.record(2, 0, 0, true, MS).unwrap();
        let mut g = FlowGate::new(0, MS);
        assert_eq!(g.refresh(&b, 0, 5000, MS), 0);
        assert_eq!(g.credit(5000), u64::MAX - 5000);
    }

    #[test]
    fn a_backup_acknowledges_every_quarter_window_when_drained_and_when_the_refresh_is_due() {
        let mut p = AckPacer::new(16, 10 * MS);
        p.sent(0, MS);
        assert!(!p.due(15, false, MS));
        assert!(p.due(16, false, MS));
        assert!(p.due(1, true, MS), "drained with one unacknowledged");
        assert!(!p.due(0, true, MS), "drained with nothing new");
        assert!(p.due(0, false, 11 * MS), "refresh");
        p.sent(16, 2 * MS);
        assert!(!p.due(16, true, 3 * MS));
        assert!(p.due(32, false, 3 * MS));
        p.reset();
        assert!(p.due(1, true, 3 * MS));
    }
}
