//! A backup's window of its own ingress.
//!
//! The data-port segment delivers ingress to every member of the cluster
//! (the switch floods it: learning is off on their ports), so while the
//! primary processes a packet, the backup holds a copy. When the primary
//! dies, the packets that reached the segment during the detection interval
//! were never replicated; the backup finds them in this window and processes
//! them after its takeover, so they are not lost.
//!
//! Which copies were never replicated: per data port, the replication stream
//! is in the order the primary received that port's packets, which is the
//! order the segment delivered them to both. The last replicated frame of a
//! port (its hash) is the anchor: everything the window holds after the
//! anchor's copy was never replicated. If the anchor's copy is not in the
//! window (the backup's own RX dropped it), frames that arrived after the
//! anchor's replica, minus any whose hash was replicated, are taken instead.

use std::collections::VecDeque;

/// Where the replication stream of one port stood, on the backup's clock.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Anchor {
    /// Hash of the last replicated frame that came in on this port.
    pub hash: u64,
    /// When its replica arrived (local ns).
    pub rx_ns: u64,
}

/// What [`IngressWindow::take_unreplicated`] found.
#[derive(Debug, PartialEq, Eq)]
pub struct Unreplicated<T> {
    /// In arrival order, with local arrival time.
    pub items: Vec<(u64, T)>,
    /// The anchor's own copy was found in the window.
    pub anchored: bool,
}

/// A bounded FIFO of `(hash, local arrival ns, item)`.
pub struct IngressWindow<T> {
    cap: usize,
    q: VecDeque<(u64, u64, T)>,
    pub evicted: u64,
}

impl<T> IngressWindow<T> {
    pub fn new(cap: usize) -> IngressWindow<T> {
        IngressWindow {
            cap: cap.max(1),
            q: VecDeque::with_capacity(cap.max(1)),
            evicted: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.q.len()
    }

    pub fn is_empty(&self) -> bool {
        self.q.is_empty()
    }

    /// Adds a copy; a full window forgets its oldest one.
    #[inline]
    pub fn push(&mut self, hash: u64, rx_ns: u64, item: T) {
        if self.q.len() == self.cap {
            self.q.pop_front();
            self.evicted += 1;
        }
        self.q.push_back((hash, rx_ns, item));
    }

    /// Forgets copies older than `before_ns` (they were long since handled).
    pub fn expire(&mut self, before_ns: u64) {
        while self.q.front().is_some_and(|(_, t, _)| *t < before_ns) {
            self.q.pop_front();
        }
    }

    /// Empties the window, returning the copies the primary never replicated
    /// given the port's `anchor` (None: nothing of this port was ever
    /// replicated) and the hashes of recently replicated frames.
    pub fn take_unreplicated(&mut self, anchor: Option<Anchor>, replicated: &dyn Fn(u64) -> bool) -> Unreplicated<T> {
        let all: Vec<(u64, u64, T)> = self.q.drain(..).collect();
        let Some(anchor) = anchor else {
            return Unreplicated {
                items: all
                    .into_iter()
                    .filter(|(h, _, _)| !replicated(*h))
                    .map(|(_, t, x)| (t, x))
                    .collect(),
                anchored: false,
            };
        };
        match all.iter().rposition(|(h, _, _)| *h == anchor.hash) {
            Some(i) => Unreplicated {
                items: all.into_iter().skip(i + 1).map(|(_, t, x)| (t, x)).collect(),
                anchored: true,
            },
            None => Unreplicated {
                items: all
                    .into_iter()
                    .filter(|(h, t, _)| *t > anchor.rx_ns && !replicated(*h))
                    .map(|(_, t, x)| (t, x))
                    .collect(),
                anchored: false,
            },
        }
    }
}

/// The hashes of the last N replicated frames (a ring), for the fallback of
/// [`IngressWindow::take_unreplicated`].
pub struct RecentHashes {
    ring: Vec<u64>,
    next: usize,
}

impl RecentHashes {
    pub fn new(n: usize) -> RecentHashes {
        RecentHashes {
            ring: vec![0; n.max(1)],
            next: 0,
        }
    }

    #[inline]
    pub fn insert(&mut self, h: u64) {
        let n = self.ring.len();
        self.ring[self.next] = h;
        self.next = (self.next + 1) % n;
    }

    pub fn contains(&self, h: u64) -> bool {
        h != 0 && self.ring.contains(&h)
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
    fn everything_after_the_anchor_copy_is_unreplicated() {
        let mut w = window(&[11, 12, 13, 14, 15]);
        let u = w.take_unreplicated(Some(Anchor { hash: 13, rx_ns: 0 }), &|_| true);
        assert!(u.anchored);
        assert_eq!(u.items.iter().map(|x| x.1).collect::<Vec<_>>(), vec![14, 15]);
        assert!(w.is_empty());
    }

    #[test]
    fn a_repeated_hash_anchors_on_its_last_copy() {
        let mut w = window(&[11, 13, 12, 13, 14]);
        let u = w.take_unreplicated(Some(Anchor { hash: 13, rx_ns: 0 }), &|_| false);
        assert_eq!(u.items.iter().map(|x| x.1).collect::<Vec<_>>(), vec![14]);
    }

    #[test]
    fn the_anchor_being_last_means_nothing_is_missing() {
        let mut w = window(&[11, 12]);
        let u = w.take_unreplicated(Some(Anchor { hash: 12, rx_ns: 0 }), &|_| false);
        assert!(u.items.is_empty() && u.anchored);
    }

    #[test]
    fn without_the_anchor_copy_later_unreplicated_frames_are_taken() {
        // Arrival times 100..=104; the anchor's replica came at 102.
        let mut w = window(&[21, 22, 23, 24, 25]);
        let replicated = |h: u64| h == 24;
        let u = w.take_unreplicated(Some(Anchor { hash: 99, rx_ns: 102 }), &replicated);
        assert!(!u.anchored);
        assert_eq!(u.items.iter().map(|x| x.1).collect::<Vec<_>>(), vec![25]);
    }

    #[test]
    fn a_port_never_replicated_gives_its_whole_window_minus_replicated_hashes() {
        let mut w = window(&[1, 2, 3]);
        let u = w.take_unreplicated(None, &|h| h == 2);
        assert_eq!(u.items.iter().map(|x| x.1).collect::<Vec<_>>(), vec![1, 3]);
    }

    #[test]
    fn a_full_window_forgets_the_oldest_and_expiry_trims_by_age() {
        let mut w = IngressWindow::new(3);
        for i in 0..5u64 {
            w.push(i, i * 10, i);
        }
        assert_eq!(w.evicted, 2);
        w.expire(35);
        assert_eq!(w.len(), 1);
    }

    #[test]
    fn recent_hashes_remember_the_last_n() {
        let mut r = RecentHashes::new(2);
        r.insert(5);
        r.insert(6);
        r.insert(7);
        assert!(!r.contains(5));
        assert!(r.contains(6) && r.contains(7));
    }
}
