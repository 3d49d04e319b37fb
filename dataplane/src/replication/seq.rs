//! Sequence continuity of one shard's replication stream, as seen by a
//! backup, and whether the backup is synchronized with it.
//!
//! A backup is synchronized on a shard if it processed that shard's stream
//! without a gap from sequence 1, or from where it joined it: after a
//! checkpoint that installed the primary's state at sequence S, from S + 1
//! ([`SeqTracker::join_at`], `worker::checkpoint`); for a function that
//! keeps no state (`forward`), from the first frame it got after a late
//! start or a gap. Either join counts once the primary has transmitted
//! every packet before it: nothing before it can then be owed at a
//! takeover. The primary
//! numbers each shard's ingress 1, 2, 3, ...; a KEEPALIVE carries the last
//! number assigned, so an idle shard is checked too; every frame carries
//! `tx_done`, the primary's transmitted prefix.

/// What to do with a DATA frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SeqVerdict {
    /// The next one: process it.
    InOrder,
    /// Already processed (a duplicate or an old frame): drop it.
    Old,
    /// Frames were lost before this one: process it, the shard is out of
    /// sync (`missing` frames).
    Gap { missing: u64 },
}

#[derive(Clone, Debug)]
pub struct SeqTracker {
    /// Last sequence processed (0 = none).
    last: u64,
    synced: bool,
    /// The function keeps no state: a late start is a join, not a gap.
    joinable: bool,
    /// Joined late: the first sequence held, until the primary's `tx_done`
    /// covers everything before it.
    joining_from: Option<u64>,
    /// The sequence this backup joined the stream at (0: it followed the
    /// stream from its start, or never joined).
    pub joined_at: u64,
    pub gaps: u64,
    pub missing: u64,
    pub old: u64,
}

impl Default for SeqTracker {
    fn default() -> Self {
        SeqTracker::new()
    }
}

impl SeqTracker {
    /// A backup that starts with the stream: synchronized until a gap.
    pub fn new() -> SeqTracker {
        SeqTracker {
            last: 0,
            synced: true,
            joinable: false,
            joining_from: None,
            joined_at: 0,
            gaps: 0,
            missing: 0,
            old: 0,
        }
    }

    /// For a function that keeps no state: a first frame past sequence 1
    /// starts a join instead of a gap.
    pub fn joinable(mut self, yes: bool) -> SeqTracker {
        self.joinable = yes;
        self
    }

    /// Waiting for the primary's `tx_done` to cover the frames before the
    /// first one this backup got.
    pub fn joining(&self) -> bool {
        self.joining_from.is_some()
    }

    /// A node whose state diverged (a fenced primary): it keeps following
    /// from `last` but is not synchronized.
    pub fn diverged(last: u64) -> SeqTracker {
        SeqTracker {
            last,
            synced: false,
            ..SeqTracker::new()
        }
    }

    /// A primary handing over at a sequence boundary: synchronized, at `last`.
    pub fn at(last: u64) -> SeqTracker {
        SeqTracker {
            last,
            ..SeqTracker::new()
        }
    }

    pub fn last(&self) -> u64 {
        self.last
    }

    pub fn synced(&self) -> bool {
        self.synced
    }

    pub fn mark_unsynced(&mut self) {
        self.synced = false;
        self.joining_from = None;
    }

    /// A DATA frame of sequence `seq`; `tx_done` is the header's.
    #[inline]
    pub fn on_data(&mut self, seq: u64, tx_done: u64) -> SeqVerdict {
        if seq <= self.last {
            self.old += 1;
            return SeqVerdict::Old;
        }
        let missing = seq - self.last - 1;
        let verdict = if missing == 0 {
            SeqVerdict::InOrder
        } else if self.skipped(missing, seq) {
            SeqVerdict::Gap { missing }
        } else {
            SeqVerdict::InOrder
        };
        self.last = seq;
        self.settle_join(tx_done);
        verdict
    }

    /// A KEEPALIVE, SWITCHOVER or AUDIT frame carrying the last sequence the
    /// primary assigned and its `tx_done`: if it is ahead of us, DATA frames
    /// were lost.
    #[inline]
    pub fn on_marker(&mut self, last_assigned: u64, tx_done: u64) {
        if last_assigned > self.last {
            self.skipped(last_assigned - self.last, last_assigned + 1);
            self.last = last_assigned;
        }
        self.settle_join(tx_done);
    }

    /// `missing` frames before `next` never came. A function without state
    /// (re)joins the stream at `next`: a late start is no gap, a later one
    /// is counted; either way nothing before `next` matters once the
    /// primary has transmitted it. With state, the shard stays out of sync
    /// until a checkpoint joins it again ([`Self::join_at`]). Returns
    /// whether it counts as a gap.
    fn skipped(&mut self, missing: u64, next: u64) -> bool {
        // Nothing processed yet: this is the first frame the backup got.
        let late_start = self.joinable && self.last == 0;
        if !late_start {
            self.gaps += 1;
            self.missing += missing;
        }
        self.synced = false;
        self.joining_from = self.joinable.then_some(next);
        !late_start
    }

    /// A checkpoint installed the primary's state as of sequence
    /// `boundary`: the stream goes on from the next frame, and the shard is
    /// synchronized once the primary's `tx_done` covers `boundary` (nothing
    /// before it can then be owed at a takeover). False, with nothing
    /// changed, when frames past the boundary were already taken (the mark
    /// came out of order).
    pub fn join_at(&mut self, boundary: u64, tx_done: u64) -> bool {
        if self.last > boundary {
            return false;
        }
        self.last = boundary;
        self.synced = false;
        self.joining_from = Some(boundary + 1);
        self.settle_join(tx_done);
        true
    }

    fn settle_join(&mut self, tx_done: u64) {
        if let Some(first) = self.joining_from {
            if tx_done + 1 >= first {
                self.joining_from = None;
                self.joined_at = first;
                self.synced = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_from_one_without_gaps_stays_synchronized() {
        let mut t = SeqTracker::new();
        for s in 1..=100 {
            assert_eq!(t.on_data(s, 0), SeqVerdict::InOrder);
        }
        t.on_marker(100, 0);
        assert!(t.synced());
        assert_eq!((t.last(), t.gaps, t.missing), (100, 0, 0));
    }

    #[test]
    fn a_gap_is_counted_with_its_size_and_unsynchronizes() {
        let mut t = SeqTracker::new();
        t.on_data(1, 0);
        assert_eq!(t.on_data(5, 0), SeqVerdict::Gap { missing: 3 });
        assert_eq!(t.on_data(6, 0), SeqVerdict::InOrder);
        assert!(!t.synced());
        assert_eq!((t.gaps, t.missing), (1, 3));
    }

    #[test]
    fn joining_mid_stream_is_a_gap_from_one() {
        let mut t = SeqTracker::new();
        assert_eq!(t.on_data(1000, 0), SeqVerdict::Gap { missing: 999 });
        assert!(!t.synced());
    }

    #[test]
    fn a_keepalive_ahead_of_us_reveals_lost_data_frames() {
        let mut t = SeqTracker::new();
        t.on_data(1, 0);
        t.on_data(2, 0);
        t.on_marker(2, 0);
        assert!(t.synced());
        t.on_marker(4, 0);
        assert!(!t.synced());
        assert_eq!((t.last(), t.missing), (4, 2));
    }

    #[test]
    fn a_keepalive_at_zero_on_an_idle_shard_is_in_sync() {
        let mut t = SeqTracker::new();
        t.on_marker(0, 0);
        assert!(t.synced());
    }

    #[test]
    fn old_and_duplicate_frames_are_dropped_and_counted() {
        let mut t = SeqTracker::new();
        t.on_data(1, 0);
        t.on_data(2, 0);
        assert_eq!(t.on_data(2, 0), SeqVerdict::Old);
        assert_eq!(t.on_data(1, 0), SeqVerdict::Old);
        assert_eq!(t.old, 2);
        assert!(t.synced());
    }

    #[test]
    fn a_stateless_backup_joining_mid_stream_is_synchronized_once_tx_done_covers_what_came_before() {
        let mut t = SeqTracker::new().joinable(true);
        // Joins at 1000 while the primary has transmitted up to 990 only:
        // 991..999 may still be owed and this backup never got them.
        assert_eq!(t.on_data(1000, 990), SeqVerdict::InOrder);
        assert!(!t.synced() && t.joining());
        assert_eq!(t.on_data(1001, 998), SeqVerdict::InOrder);
        assert!(!t.synced());
        assert_eq!(t.on_data(1002, 999), SeqVerdict::InOrder);
        assert!(t.synced() && !t.joining());
        assert_eq!((t.joined_at, t.gaps, t.missing, t.last()), (1000, 0, 0, 1002));
    }

    #[test]
    fn a_stateless_backup_joining_on_an_idle_keepalive_is_synchronized_at_once() {
        let mut t = SeqTracker::new().joinable(true);
        t.on_marker(500, 500);
        assert!(t.synced());
        assert_eq!((t.joined_at, t.last(), t.gaps), (501, 500, 0));
        assert_eq!(t.on_data(501, 500), SeqVerdict::InOrder);
        assert!(t.synced());
    }

    #[test]
    fn a_gap_while_joining_restarts_the_join_after_it() {
        let mut t = SeqTracker::new().joinable(true);
        t.on_data(1000, 990);
        assert_eq!(t.on_data(1003, 999), SeqVerdict::Gap { missing: 2 });
        assert!(!t.synced() && t.joining());
        t.on_data(1004, 1001);
        assert!(!t.synced(), "1001 and 1002 may still be owed");
        t.on_data(1005, 1002);
        assert!(t.synced());
        assert_eq!((t.joined_at, t.gaps, t.missing), (1003, 1, 2));
    }

    #[test]
    fn a_stateless_backup_that_followed_from_one_rejoins_after_a_gap_once_tx_done_covers_it() {
        let mut t = SeqTracker::new().joinable(true);
        t.on_data(1, 0);
        assert_eq!(t.on_data(5, 1), SeqVerdict::Gap { missing: 3 });
        assert!(!t.synced() && t.joining());
        t.on_marker(5, 4);
        assert!(t.synced());
        assert_eq!((t.joined_at, t.gaps, t.missing), (5, 1, 3));
    }

    #[test]
    fn a_checkpoint_joins_a_stateful_backup_at_its_boundary_once_tx_done_covers_it() {
        let mut t = SeqTracker::new();
        t.on_data(40, 39);
        assert!(!t.synced());
        // Frames 41..=49 came while it installed (taken, not processed).
        for s in 41..=49 {
            t.on_data(s, s - 1);
        }
        assert!(t.join_at(50, 48), "the mark at 50 after 49");
        assert!(!t.synced() && t.joining(), "49 and 50 may still be owed");
        assert_eq!(t.on_data(51, 50), SeqVerdict::InOrder);
        assert!(t.synced());
        assert_eq!((t.last(), t.joined_at, t.gaps), (51, 51, 1));
        // A later gap unsynchronizes it again, until the next checkpoint.
        t.on_data(60, 59);
        assert!(!t.synced() && !t.joining());
    }

    #[test]
    fn a_mark_behind_frames_already_taken_joins_nothing() {
        let mut t = SeqTracker::new();
        t.on_data(5, 0);
        t.on_data(6, 5);
        assert!(!t.join_at(5, 6));
        assert!(!t.synced() && !t.joining());
        assert_eq!(t.last(), 6);
    }

    #[test]
    fn a_stateful_backup_joining_mid_stream_never_becomes_synchronized() {
        let mut t = SeqTracker::new();
        assert_eq!(t.on_data(1000, 999), SeqVerdict::Gap { missing: 999 });
        t.on_data(1001, 1001);
        t.on_marker(1001, 1001);
        assert!(!t.synced() && !t.joining());
    }
}
