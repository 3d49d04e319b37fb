//! Per-(port, queue) TX ownership: only the owner of a TX queue transmits on
//! it. The control thread flips it; the worker reads it once per burst.

use std::sync::atomic::{AtomicBool, Ordering};

use crate::nf::Side;

/// One flag per data port and queue.
pub struct TxOwnership {
    queues: usize,
    owned: Vec<AtomicBool>,
}

impl TxOwnership {
    /// All queues start owned (`true`, a standalone node) or not (a backup).
    pub fn new(queues: usize, owned: bool) -> TxOwnership {
        TxOwnership {
            queues,
            owned: (0..2 * queues).map(|_| AtomicBool::new(owned)).collect(),
        }
    }

    #[inline]
    fn slot(&self, side: Side, queue: usize) -> Option<&AtomicBool> {
        self.owned.get(side.index() * self.queues + queue)
    }

    /// Whether this node may transmit on `side`'s queue `queue`. Acquire
    /// pairs with the Release in `set`: a worker that sees ownership also
    /// sees everything the control thread did before granting it.
    #[inline]
    pub fn owns(&self, side: Side, queue: usize) -> bool {
        self.slot(side, queue).is_some_and(|a| a.load(Ordering::Acquire))
    }

    pub fn set(&self, side: Side, queue: usize, owned: bool) {
        if let Some(a) = self.slot(side, queue) {
            a.store(owned, Ordering::Release);
        }
    }

    /// Flips every queue of both data ports.
    pub fn set_all(&self, owned: bool) {
        for a in &self.owned {
            a.store(owned, Ordering::Release);
        }
    }

    pub fn queues(&self) -> usize {
        self.queues
    }

    /// Number of (port, queue) pairs owned.
    pub fn owned_count(&self) -> usize {
        self.owned.iter().filter(|a| a.load(Ordering::Acquire)).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_are_per_port_and_queue() {
        let o = TxOwnership::new(2, false);
        o.set(Side::Outside, 1, true);
        assert!(o.owns(Side::Outside, 1));
        assert!(!o.owns(Side::Outside, 0));
        assert!(!o.owns(Side::Inside, 1));
        assert!(!o.owns(Side::Inside, 7), "an unknown queue is never owned");
        o.set_all(true);
        assert_eq!(o.owned_count(), 4);
    }
}
