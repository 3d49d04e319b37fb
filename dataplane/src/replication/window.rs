//! A backup's window of its own ingress.
//!
//! The data-port segment delivers ingress to every member of the cluster
//! (the switch floods it: learning is off on their ports), so while the
//! primary processes a packet, the backup holds a copy. When the primary
//! dies, the packets that reached the segment during the detection interval
//! were never replicated; the backup still holds them here and processes
//! them after its takeover, so they are not lost.
//!
//! Per data port, the replication stream comes in the order the primary
//! received that port's packets, which is the order the segment delivered
//! them to both. So when a replica arrives, the backup's copy of it is at
//! (or near) the front of the window, and everything in front of it was
//! either replicated before or will never be (the primary dropped it): the
//! replica's arrival retires all of them. The window therefore only ever
//! holds the packets in flight between the segment and their replica, and
//! at a takeover, whatever it holds was never replicated.
//!
//! A replica can also come *before* its copy: after a stall (the backup
//! descheduled), both RX rings are backed up, and one burst of replication
//! frames carries far more batched records than one burst of the data port.
//! Such replicas wait in a queue of hashes (`ahead`), and their copy is
//! retired the moment it arrives, with everything the window holds in front
//! of it. Without this, those copies would stay at the front of the window
//! for good and be processed a second time at a takeover.

use std::collections::VecDeque;

/// A bounded FIFO of `(hash, local arrival ns, item)`, plus the hashes of
/// replicas that came before their copy.
pub struct IngressWindow<T> {
    cap: usize,
    q: VecDeque<(u64, u64, T)>,
    ahead: VecDeque<u64>,
    /// Copies pushed out by a full window before their replica came: a
    /// takeover at that moment could miss them.
    pub evicted: u64,
    /// Replicas that came before their copy, or whose copy never came (the
    /// backup's RX dropped it, or the segment does not flood to it).
    pub unmatched: u64,
}

impl<T> IngressWindow<T> {
    pub fn new(cap: usize) -> IngressWindow<T> {
        let cap = cap.max(1);
        IngressWindow {
            cap,
            q: VecDeque::with_capacity(cap),
            ahead: VecDeque::new(),
            evicted: 0,
            unmatched: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.q.len()
    }

    pub fn is_empty(&self) -> bool {
        self.q.is_empty()
    }

    /// Replicas waiting for their copy.
    pub fn ahead(&self) -> usize {
        self.ahead.len()
    }

    /// Adds a copy; a full window forgets its oldest one (counted). A copy
    /// whose replica already came is retired at once, with everything in
    /// front of it.
    #[inline]
    pub fn push(&mut self, hash: u64, rx_ns: u64, item: T) {
        if !self.ahead.is_empty() {
            if let Some(i) = self.ahead.iter().position(|h| *h == hash) {
                // Replicas in front of it had copies this backup never got;
                // copies in the window are older than this one and were
                // passed over by the stream: never replicated.
                self.ahead.drain(..=i);
                self.q.clear();
                return;
            }
        }
        if self.q.len() == self.cap {
            self.q.pop_front();
            self.evicted += 1;
        }
        self.q.push_back((hash, rx_ns, item));
    }

    /// The replica of the frame with `hash` arrived: retires its copy and
    /// everything in front of it, or, if the copy has not come yet, waits
    /// for it. Returns how many copies were retired.
    #[inline]
    pub fn replicated(&mut self, hash: u64) -> usize {
        // Normally the copy is the front entry; a full scan only happens
        // when it is missing, which a healthy backup does not see often.
        let Some(i) = self.q.iter().position(|(h, _, _)| *h == hash) else {
            self.unmatched += 1;
            if self.ahead.len() == self.cap {
                self.ahead.pop_front();
            }
            self.ahead.push_back(hash);
            return 0;
        };
        // Its copy is here, so the copies of the replicas still waiting
        // (older ones: the segment's order) will never come.
        self.ahead.clear();
        self.q.drain(..=i);
        i + 1
    }

    /// Empties the window: the copies never replicated, in arrival order,
    /// with their arrival time.
    pub fn take_all(&mut self) -> Vec<(u64, T)> {
        self.ahead.clear();
        self.q.drain(..).map(|(_, t, x)| (t, x)).collect()
    }

    /// Frees everything (a node that stops being a backup).
    pub fn clear(&mut self) {
        self.q.clear();
        self.ahead.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(hashes: &[u64]) -> IngressWindow<u64> {
        let mut w = IngressWindow::new(64);
        for (i, h) in hashes.iter().enumerate() {
            w.push(*h, 100 + i as u64, *h);
        }
        w
    }

    #[test]
    fn a_replica_retires_its_copy_and_everything_before_it() {
        let mut w = window(&[11, 12, 13, 14, 15]);
        assert_eq!(w.replicated(11), 1);
        assert_eq!(w.replicated(13), 2, "12 was dropped by the primary: retired with 13");
        assert_eq!(w.take_all().iter().map(|x| x.1).collect::<Vec<_>>(), vec![14, 15]);
    }

    #[test]
    fn a_replica_without_a_local_copy_retires_nothing() {
        let mut w = window(&[21, 22]);
        assert_eq!(w.replicated(99), 0);
        assert_eq!(w.unmatched, 1);
        assert_eq!(w.len(), 2);
        assert_eq!(w.replicated(22), 2);
        assert!(w.is_empty());
    }

    #[test]
    fn a_repeated_frame_retires_its_first_copy_only() {
        let mut w = window(&[5, 5, 6]);
        assert_eq!(w.replicated(5), 1);
        assert_eq!(w.take_all().iter().map(|x| x.1).collect::<Vec<_>>(), vec![5, 6]);
    }

    #[test]
    fn a_full_window_forgets_the_oldest_and_counts_it() {
        let mut w = IngressWindow::new(3);
        for i in 0..5u64 {
            w.push(i, i * 10, i);
        }
        assert_eq!(w.evicted, 2);
        assert_eq!(w.take_all().iter().map(|x| x.0).collect::<Vec<_>>(), vec![20, 30, 40]);
    }

    #[test]
    fn a_replica_before_its_copy_retires_the_copy_on_arrival() {
        let mut w = IngressWindow::new(64);
        assert_eq!(w.replicated(7), 0);
        assert_eq!((w.unmatched, w.ahead()), (1, 1));
        w.push(7, 100, 7u64);
        assert!(w.is_empty(), "the copy of a replicated frame is not kept");
        assert_eq!(w.ahead(), 0);
        w.push(8, 101, 8);
        assert_eq!(w.take_all(), vec![(101, 8)], "only the unreplicated copy stays");
    }

    #[test]
    fn after_a_stall_the_window_holds_only_what_was_not_replicated() {
        // The backup was descheduled: 3000 replicas (batched, many per
        // frame) are read before the 3000 copies of the same packets, of
        // which its data port dropped 1000..2500.
        let mut w = IngressWindow::new(8192);
        for h in 0..3000u64 {
            w.replicated(h);
        }
        for h in (0..1000u64).chain(2500..3000) {
            w.push(h, h, h);
        }
        assert_eq!((w.len(), w.ahead()), (0, 0));
        // Back to normal: copies come first, replicas retire them.
        for h in 3000..3100u64 {
            w.push(h, h, h);
            assert_eq!(w.replicated(h), 1);
        }
        w.push(3100, 3100, 3100);
        assert_eq!(w.take_all(), vec![(3100, 3100)]);
    }

    #[test]
    fn copies_the_stream_passed_over_are_retired_with_the_next_replicated_copy() {
        let mut w = IngressWindow::new(64);
        w.push(1, 1, 1u64); // the primary dropped it: never replicated
        w.replicated(2);
        w.push(2, 2, 2);
        assert!(w.is_empty());
    }

    #[test]
    fn a_replica_finds_its_copy_anywhere_in_the_window() {
        // 1000 copies the primary never replicated, then one it did.
        let mut w = IngressWindow::new(2048);
        for h in 0..1001u64 {
            w.push(h, h, h);
        }
        assert_eq!(w.replicated(1000), 1001);
        assert!(w.is_empty());
    }

    /// The segment delivers packets 0, 1, 2, ... in order; the backup's
    /// port drops some copies, the primary drops some packets (never
    /// replicated); copies and replicas arrive interleaved at random, a
    /// replica up to 40 packets ahead of its copy or behind it. At every
    /// step, what a takeover would process holds no packet already
    /// replicated (no duplicate) and every copy that arrived of a packet
    /// after the last one replicated so far (no loss). It may also hold a
    /// packet the primary dropped: when replicas run ahead and the copy of
    /// the next replicated one never comes, a hash cannot tell an older,
    /// passed-over copy from a newer one; the next replica retires it.
    #[test]
    fn at_any_moment_the_window_holds_no_replicated_packet_and_every_later_copy() {
        let mut rng = crate::fuzzing::Corpus::new(0x2545_f491_4f6c_dd1d);
        let mut next = move || rng.next_u64();
        let mut total_extras = 0;
        for _ in 0..200 {
            const N: u64 = 400;
            let copies: Vec<u64> = (0..N).filter(|_| next() % 20 != 0).collect();
            let replicas: Vec<u64> = (0..N).filter(|_| next() % 20 != 0).collect();
            let mut w = IngressWindow::new(256);
            let (mut c, mut r) = (0, 0);
            let mut last_replicated: Option<u64> = None;
            let mut extras = 0usize;
            while c < copies.len() || r < replicas.len() {
                // Which stream delivers next: either, as long as neither
                // runs more than 40 packets ahead of the other.
                let copy_next = match (copies.get(c), replicas.get(r)) {
                    (Some(&a), Some(&b)) if a + 40 < b => true,
                    (Some(&a), Some(&b)) if b + 40 < a => false,
                    (Some(_), Some(_)) => next() % 2 == 0,
                    (Some(_), None) => true,
                    _ => false,
                };
                if copy_next {
                    w.push(copies[c] * 7919, copies[c], copies[c]);
                    c += 1;
                } else {
                    w.replicated(replicas[r] * 7919);
                    last_replicated = Some(replicas[r]);
                    r += 1;
                }
                let held: Vec<u64> = w.q.iter().map(|(_, _, x)| *x).collect();
                let done = &replicas[..r];
                assert!(
                    held.iter().all(|k| done.binary_search(k).is_err()),
                    "a replicated packet is held: {held:?}"
                );
                let later: Vec<u64> = copies[..c]
                    .iter()
                    .copied()
                    .filter(|k| last_replicated.is_none_or(|l| *k > l))
                    .collect();
                let extra = held.len().checked_sub(later.len()).expect("a later copy is missing");
                assert_eq!(held[extra..], later[..], "after {c} copies and {r} replicas");
                assert!(held.windows(2).all(|p| p[0] < p[1]), "in arrival order");
                extras += extra;
            }
            assert_eq!(w.evicted, 0);
            total_extras += extras;
        }
        assert!(total_extras > 0, "the interleavings reach the case above");
    }

    #[test]
    fn replicas_waiting_for_a_copy_are_bounded_by_the_window_size() {
        let mut w: IngressWindow<u64> = IngressWindow::new(4);
        for h in 0..10u64 {
            w.replicated(h);
        }
        assert_eq!((w.ahead(), w.unmatched), (4, 10));
        w.push(9, 9, 9);
        assert_eq!((w.len(), w.ahead()), (0, 0));
    }
}
