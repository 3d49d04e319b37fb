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

use std::collections::VecDeque;

/// How far from the front a replica's copy is looked for. A copy the
/// backup never received (its own RX dropped it) costs one scan this long
/// and retires nothing.
pub const SEARCH: usize = 512;

/// A bounded FIFO of `(hash, local arrival ns, item)`.
pub struct IngressWindow<T> {
    cap: usize,
    q: VecDeque<(u64, u64, T)>,
    /// Copies pushed out by a full window before their replica came: a
    /// takeover at that moment could miss them.
    pub evicted: u64,
    /// Replicas whose copy was not found near the front.
    pub unmatched: u64,
}

impl<T> IngressWindow<T> {
    pub fn new(cap: usize) -> IngressWindow<T> {
        IngressWindow {
            cap: cap.max(1),
            q: VecDeque::with_capacity(cap.max(1)),
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

    /// Adds a copy; a full window forgets its oldest one (counted).
    #[inline]
    pub fn push(&mut self, hash: u64, rx_ns: u64, item: T) {
        if self.q.len() == self.cap {
            self.q.pop_front();
            self.evicted += 1;
        }
        self.q.push_back((hash, rx_ns, item));
    }

    /// The replica of the frame with `hash` arrived: retires its copy and
    /// everything in front of it. Returns how many were retired.
    #[inline]
    pub fn replicated(&mut self, hash: u64) -> usize {
        let Some(i) = self.q.iter().take(SEARCH).position(|(h, _, _)| *h == hash) else {
            self.unmatched += 1;
            return 0;
        };
        self.q.drain(..=i);
        i + 1
    }

    /// Empties the window: the copies never replicated, in arrival order,
    /// with their arrival time.
    pub fn take_all(&mut self) -> Vec<(u64, T)> {
        self.q.drain(..).map(|(_, t, x)| (t, x)).collect()
    }

    /// Frees everything (a node that stops being a backup).
    pub fn clear(&mut self) {
        self.q.clear();
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
}
