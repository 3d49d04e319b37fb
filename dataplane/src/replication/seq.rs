//! Sequence continuity of one shard's replication stream, as seen by a
//! backup, and whether the backup is synchronized with it.
//!
//! Until the checkpoint protocol lands, a backup is synchronized on a shard
//! only if it processed that shard's stream from sequence 1 without a gap.
//! The primary numbers each shard's ingress 1, 2, 3, ...; a KEEPALIVE
//! carries the last number assigned, so an idle shard is checked too.

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
            gaps: 0,
            missing: 0,
            old: 0,
        }
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
    }

    #[inline]
    pub fn on_data(&mut self, seq: u64) -> SeqVerdict {
        if seq <= self.last {
            self.old += 1;
            return SeqVerdict::Old;
        }
        let missing = seq - self.last - 1;
        self.last = seq;
        if missing == 0 {
            SeqVerdict::InOrder
        } else {
            self.gaps += 1;
            self.missing += missing;
            self.synced = false;
            SeqVerdict::Gap { missing }
        }
    }

    /// A KEEPALIVE, SWITCHOVER or AUDIT frame carrying the last sequence the
    /// primary assigned: if it is ahead of us, DATA frames were lost.
    #[inline]
    pub fn on_marker(&mut self, last_assigned: u64) {
        if last_assigned > self.last {
            self.gaps += 1;
            self.missing += last_assigned - self.last;
            self.last = last_assigned;
            self.synced = false;
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
            assert_eq!(t.on_data(s), SeqVerdict::InOrder);
        }
        t.on_marker(100);
        assert!(t.synced());
        assert_eq!((t.last(), t.gaps, t.missing), (100, 0, 0));
    }

    #[test]
    fn a_gap_is_counted_with_its_size_and_unsynchronizes() {
        let mut t = SeqTracker::new();
        t.on_data(1);
        assert_eq!(t.on_data(5), SeqVerdict::Gap { missing: 3 });
        assert_eq!(t.on_data(6), SeqVerdict::InOrder);
        assert!(!t.synced());
        assert_eq!((t.gaps, t.missing), (1, 3));
    }

    #[test]
    fn joining_mid_stream_is_a_gap_from_one() {
        let mut t = SeqTracker::new();
        assert_eq!(t.on_data(1000), SeqVerdict::Gap { missing: 999 });
        assert!(!t.synced());
    }

    #[test]
    fn a_keepalive_ahead_of_us_reveals_lost_data_frames() {
        let mut t = SeqTracker::new();
        t.on_data(1);
        t.on_data(2);
        t.on_marker(2);
        assert!(t.synced());
        t.on_marker(4);
        assert!(!t.synced());
        assert_eq!((t.last(), t.missing), (4, 2));
    }

    #[test]
    fn a_keepalive_at_zero_on_an_idle_shard_is_in_sync() {
        let mut t = SeqTracker::new();
        t.on_marker(0);
        assert!(t.synced());
    }

    #[test]
    fn old_and_duplicate_frames_are_dropped_and_counted() {
        let mut t = SeqTracker::new();
        t.on_data(1);
        t.on_data(2);
        assert_eq!(t.on_data(2), SeqVerdict::Old);
        assert_eq!(t.on_data(1), SeqVerdict::Old);
        assert_eq!(t.old, 2);
        assert!(t.synced());
    }
}
