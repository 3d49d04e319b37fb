//! The backup's shadow ring: the egress it computed for each replicated
//! packet, keyed by sequence, until the primary reports (`tx_done`) that it
//! handed that egress to its NIC. On takeover, what is left after the last
//! `tx_done` is what the primary may never have sent: the new primary sends
//! it first.

use std::collections::VecDeque;

/// A bounded FIFO of `(seq, item)`, seq increasing.
pub struct ShadowRing<T> {
    cap: usize,
    q: VecDeque<(u64, T)>,
    /// Entries pushed out by a full ring before `tx_done` released them:
    /// egress that a takeover at that moment could not replay.
    pub overflow: u64,
}

impl<T> ShadowRing<T> {
    pub fn new(cap: usize) -> ShadowRing<T> {
        ShadowRing {
            cap: cap.max(1),
            q: VecDeque::with_capacity(cap.max(1)),
            overflow: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.q.len()
    }

    pub fn is_empty(&self) -> bool {
        self.q.is_empty()
    }

    /// The sequence of the oldest entry.
    #[inline]
    pub fn oldest(&self) -> Option<u64> {
        self.q.front().map(|(s, _)| *s)
    }

    /// Adds the egress of `seq`; a full ring drops its oldest entry (counted).
    #[inline]
    pub fn push(&mut self, seq: u64, item: T) {
        if self.q.len() == self.cap {
            self.q.pop_front();
            self.overflow += 1;
        }
        self.q.push_back((seq, item));
    }

    /// Frees every entry with seq <= `tx_done`; returns how many.
    #[inline]
    pub fn release_upto(&mut self, tx_done: u64) -> usize {
        self.release_upto_with(tx_done, drop)
    }

    /// [`ShadowRing::release_upto`], handing each released item to `f` (a
    /// worker collects the packets to free them in one call).
    #[inline]
    pub fn release_upto_with(&mut self, tx_done: u64, mut f: impl FnMut(T)) -> usize {
        let mut n = 0;
        while self.q.front().is_some_and(|(s, _)| *s <= tx_done) {
            if let Some((_, item)) = self.q.pop_front() {
                f(item);
            }
            n += 1;
        }
        n
    }

    /// Takes every entry with seq > `after`, in order, and empties the ring.
    pub fn drain_after(&mut self, after: u64) -> Vec<(u64, T)> {
        let out: Vec<(u64, T)> = self.q.drain(..).filter(|(s, _)| *s > after).collect();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tx_done_releases_exactly_the_entries_at_or_below_it() {
        let mut r = ShadowRing::new(16);
        for s in 1..=10u64 {
            r.push(s, s * 100);
        }
        assert_eq!(r.release_upto(4), 4);
        assert_eq!(r.len(), 6);
        let left = r.drain_after(7);
        assert_eq!(left, vec![(8, 800), (9, 900), (10, 1000)]);
        assert!(r.is_empty());
    }

    #[test]
    fn released_entries_are_handed_over_oldest_first() {
        let mut r = ShadowRing::new(16);
        for s in 1..=6u64 {
            r.push(s, s * 10);
        }
        let mut got = Vec::new();
        assert_eq!(r.release_upto_with(3, |x| got.push(x)), 3);
        assert_eq!(got, vec![10, 20, 30]);
        assert_eq!(r.len(), 3);
    }

    #[test]
    fn a_full_ring_drops_its_oldest_entry_and_counts_it() {
        let mut r = ShadowRing::new(3);
        for s in 1..=5u64 {
            r.push(s, ());
        }
        assert_eq!(r.overflow, 2);
        assert_eq!(r.drain_after(0).iter().map(|e| e.0).collect::<Vec<_>>(), vec![3, 4, 5]);
    }

    #[test]
    fn several_egress_packets_of_one_sequence_are_all_kept() {
        let mut r = ShadowRing::new(8);
        r.push(1, 'a');
        r.push(2, 'b');
        r.push(2, 'c');
        r.release_upto(1);
        assert_eq!(r.drain_after(1), vec![(2, 'b'), (2, 'c')]);
    }
}
