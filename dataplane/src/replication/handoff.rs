//! A backup's ledger of packets in transit between shards.
//!
//! On the primary, shard `q` hands a packet to its owner `s` (steering):
//! `q`'s stream carries a HANDED_OFF record, `s`'s stream later carries the
//! packet as STEERED. Between the two, the packet exists only in `s`'s
//! inbox on the primary — for as long as `s` takes to poll it, which on a
//! busy machine is milliseconds. If the primary dies then, the backup must
//! still process it. So the backup's shard `q` parks the HANDED_OFF
//! record's packet (the replica's own bytes, whether or not the backup saw
//! the packet on its data ports) here, under the owner's shard; the
//! backup's shard `s`, on the STEERED record, settles it (frees it).
//! Whatever is still parked when `s` becomes primary was never replicated
//! by the old primary: `s` processes it as new ingress.
//!
//! The two shards run independently, so a settle can come before its park:
//! it is remembered and cancels the park when it comes. Matching is by the
//! frame's hash (the same as the ingress window's), per owner. Bounded:
//! entries older than [`STALE_NS`] are forgotten when the ledger fills (a
//! takeover never waits that long), and beyond that a park is refused,
//! counted.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// An entry this old is no longer needed: a takeover happens within a dead
/// interval of the primary's last frame.
pub const STALE_NS: u64 = 1_000_000_000;

struct Slot<T> {
    /// Parked packets, oldest first: (ticket, local ns, item).
    parked: VecDeque<(u64, u64, T)>,
    /// Settles that came before their park: local ns of each.
    early: VecDeque<u64>,
}

// Not derived: a derive would ask `T: Default` of the items.
impl<T> Default for Slot<T> {
    fn default() -> Self {
        Slot {
            parked: VecDeque::new(),
            early: VecDeque::new(),
        }
    }
}

struct Inner<T> {
    cap: usize,
    slots: HashMap<(u16, u64), Slot<T>>,
    entries: usize,
    ticket: u64,
    refused: u64,
    forgotten: u64,
}

/// Shared by every shard of a node.
pub struct HandoffLedger<T> {
    inner: Mutex<Inner<T>>,
    /// Parked packets: what a primary's loop reads before taking the lock.
    parked: AtomicUsize,
}

impl<T> HandoffLedger<T> {
    pub fn new(cap: usize) -> HandoffLedger<T> {
        HandoffLedger {
            inner: Mutex::new(Inner {
                cap: cap.max(1),
                slots: HashMap::new(),
                entries: 0,
                ticket: 0,
                refused: 0,
                forgotten: 0,
            }),
            parked: AtomicUsize::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner<T>> {
        // A worker that panicked while holding it left consistent data (no
        // operation here panics midway): keep going.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Parks `item` (the frame with `hash`) until shard `owner` settles it.
    /// Dropped at once if its settle came first.
    pub fn park(&self, owner: u16, hash: u64, item: T, now: u64) {
        let mut g = self.lock();
        if g.take_one((owner, hash), |slot| slot.early.pop_front().is_some()) {
            return;
        }
        if !self.make_room(&mut g, now) {
            g.refused += 1;
            return;
        }
        g.ticket += 1;
        let t = g.ticket;
        g.slots
            .entry((owner, hash))
            .or_default()
            .parked
            .push_back((t, now, item));
        g.entries += 1;
        self.parked.fetch_add(1, Ordering::Relaxed);
    }

    /// Shard `owner` replicated the frame with `hash`: its parked packet, if
    /// any, is freed; else the park to come is cancelled.
    pub fn settle(&self, owner: u16, hash: u64, now: u64) {
        let mut g = self.lock();
        if g.take_one((owner, hash), |slot| slot.parked.pop_front().is_some()) {
            self.parked.fetch_sub(1, Ordering::Relaxed);
            return;
        }
        if !self.make_room(&mut g, now) {
            g.refused += 1;
            return;
        }
        g.slots.entry((owner, hash)).or_default().early.push_back(now);
        g.entries += 1;
    }

    /// Whether anything is parked at all (no lock).
    #[inline]
    pub fn any_parked(&self) -> bool {
        self.parked.load(Ordering::Relaxed) > 0
    }

    /// Takes every packet parked for `owner`, in the order they were parked.
    pub fn take_for(&self, owner: u16) -> Vec<T> {
        let mut g = self.lock();
        let mut out: Vec<(u64, T)> = Vec::new();
        let mut taken = 0usize;
        g.slots.retain(|(o, _), slot| {
            if *o != owner {
                return true;
            }
            taken += slot.parked.len();
            out.extend(slot.parked.drain(..).map(|(t, _, x)| (t, x)));
            !slot.early.is_empty()
        });
        g.entries -= taken;
        self.parked.fetch_sub(taken, Ordering::Relaxed);
        out.sort_by_key(|(t, _)| *t);
        out.into_iter().map(|(_, x)| x).collect()
    }

    /// (entries, parks or settles refused for room, entries forgotten).
    pub fn stats(&self) -> (usize, u64, u64) {
        let g = self.lock();
        (g.entries, g.refused, g.forgotten)
    }
}

impl<T> Inner<T> {
    /// Takes one entry out of `key`'s slot with `take` (true if it had
    /// one), dropping the slot once it is empty. Whether it took one.
    fn take_one(&mut self, key: (u16, u64), take: impl FnOnce(&mut Slot<T>) -> bool) -> bool {
        let Some(slot) = self.slots.get_mut(&key) else {
            return false;
        };
        if !take(slot) {
            return false;
        }
        if slot.parked.is_empty() && slot.early.is_empty() {
            self.slots.remove(&key);
        }
        self.entries -= 1;
        true
    }
}

impl<T> HandoffLedger<T> {
    /// Room for one more entry, forgetting stale ones if needed.
    fn make_room(&self, g: &mut Inner<T>, now: u64) -> bool {
        if g.entries < g.cap {
            return true;
        }
        let before = g.entries;
        let mut freed_parked = 0usize;
        g.slots.retain(|_, slot| {
            let n = slot.parked.len();
            slot.parked.retain(|(_, t, _)| now.saturating_sub(*t) < STALE_NS);
            freed_parked += n - slot.parked.len();
            slot.early.retain(|t| now.saturating_sub(*t) < STALE_NS);
            !(slot.parked.is_empty() && slot.early.is_empty())
        });
        g.entries = g.slots.values().map(|s| s.parked.len() + s.early.len()).sum();
        g.forgotten += (before - g.entries) as u64;
        self.parked.fetch_sub(freed_parked, Ordering::Relaxed);
        g.entries < g.cap
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_settled_park_leaves_nothing_in_either_order() {
        let l = HandoffLedger::new(16);
        l.park(1, 7, "a", 0);
        assert!(l.any_parked());
        l.settle(1, 7, 1);
        l.settle(1, 8, 2);
        l.park(1, 8, "b", 3);
        assert!(!l.any_parked());
        assert_eq!(l.stats().0, 0);
        assert!(l.take_for(1).is_empty());
    }

    #[test]
    fn what_was_never_settled_goes_to_its_owner_in_parking_order() {
        let l = HandoffLedger::new(16);
        l.park(1, 30, "x", 0);
        l.park(2, 31, "other shard's", 1);
        l.park(1, 10, "y", 2);
        l.park(1, 30, "z", 3);
        l.settle(1, 30, 4);
        assert_eq!(l.take_for(1), vec!["y", "z"], "the first 30 settled, the second not");
        assert_eq!(l.take_for(2), vec!["other shard's"]);
        assert!(!l.any_parked());
    }

    #[test]
    fn a_settle_is_per_owner() {
        let l = HandoffLedger::new(16);
        l.park(1, 5, "p", 0);
        l.settle(2, 5, 1);
        assert_eq!(l.take_for(1), vec!["p"]);
    }

    #[test]
    fn a_full_ledger_forgets_stale_entries_then_refuses() {
        let l = HandoffLedger::new(2);
        l.park(1, 1, "old", 0);
        l.settle(1, 2, 0);
        l.park(1, 3, "fresh", STALE_NS + 1);
        assert_eq!(l.stats(), (1, 0, 2), "both stale entries forgotten");
        l.park(1, 4, "fresh too", STALE_NS + 2);
        l.park(1, 5, "no room", STALE_NS + 3);
        assert_eq!(l.stats(), (2, 1, 2));
        assert_eq!(l.take_for(1), vec!["fresh", "fresh too"]);
    }
}
