//! Per-worker counters and latency, written by one worker, read by the
//! control thread.
//!
//! Each counter has a single writer, so the worker updates it with a relaxed
//! load and store (a plain `add` to memory, no locked instruction); readers
//! see a value at most one burst old. Clearing is done by readers keeping a
//! baseline, as testpmd does, so the fast path never races a reset.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;

use hdrhistogram::Histogram;

use crate::nf::{DropReason, Side};

/// Counters of one worker (one shard).
#[repr(align(64))]
#[derive(Default)]
pub struct WorkerCounters {
    pub rx: [AtomicU64; 2],
    pub tx: [AtomicU64; 2],
    pub consumed: AtomicU64,
    /// Packets the function's fast path decided (the rest went through
    /// its general path): how much of the traffic is the common case.
    pub fast: AtomicU64,
    pub drops: [AtomicU64; DropReason::COUNT],
    /// RX bursts that returned at least one packet.
    pub busy_polls: AtomicU64,
    /// Loop iterations that found nothing to do.
    pub idle_polls: AtomicU64,
    /// Packets received on a data port while not its owner (backup): freed.
    pub ignored_not_owner: AtomicU64,
    /// Several shards: packets (and copies) this shard handed to another.
    pub steered_out: AtomicU64,
    /// Several shards: packets (and copies) other shards handed to this one.
    pub steered_in: AtomicU64,
}

/// Adds `n` to a single-writer counter.
#[inline(always)]
pub fn bump(c: &AtomicU64, n: u64) {
    c.store(c.load(Relaxed).wrapping_add(n), Relaxed);
}

/// A plain copy of [`WorkerCounters`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CounterSnapshot {
    pub rx: [u64; 2],
    pub tx: [u64; 2],
    pub consumed: u64,
    pub fast: u64,
    pub drops: [u64; DropReason::COUNT],
    pub busy_polls: u64,
    pub idle_polls: u64,
    pub ignored_not_owner: u64,
    pub steered_out: u64,
    pub steered_in: u64,
}

impl WorkerCounters {
    pub fn snapshot(&self) -> CounterSnapshot {
        let mut drops = [0u64; DropReason::COUNT];
        for (d, c) in drops.iter_mut().zip(self.drops.iter()) {
            *d = c.load(Relaxed);
        }
        CounterSnapshot {
            rx: [self.rx[0].load(Relaxed), self.rx[1].load(Relaxed)],
            tx: [self.tx[0].load(Relaxed), self.tx[1].load(Relaxed)],
            consumed: self.consumed.load(Relaxed),
            fast: self.fast.load(Relaxed),
            drops,
            busy_polls: self.busy_polls.load(Relaxed),
            idle_polls: self.idle_polls.load(Relaxed),
            ignored_not_owner: self.ignored_not_owner.load(Relaxed),
            steered_out: self.steered_out.load(Relaxed),
            steered_in: self.steered_in.load(Relaxed),
        }
    }

    #[inline(always)]
    pub fn drop(&self, r: DropReason, n: u64) {
        bump(&self.drops[r as usize], n);
    }

    #[inline(always)]
    pub fn rx(&self, side: Side, n: u64) {
        bump(&self.rx[side.index()], n);
    }

    #[inline(always)]
    pub fn tx(&self, side: Side, n: u64) {
        bump(&self.tx[side.index()], n);
    }
}

impl CounterSnapshot {
    /// Sum of two snapshots (for totals over workers).
    pub fn add(&mut self, o: &CounterSnapshot) {
        for i in 0..2 {
            self.rx[i] += o.rx[i];
            self.tx[i] += o.tx[i];
        }
        for (a, b) in self.drops.iter_mut().zip(o.drops.iter()) {
            *a += b;
        }
        self.consumed += o.consumed;
        self.fast += o.fast;
        self.busy_polls += o.busy_polls;
        self.idle_polls += o.idle_polls;
        self.ignored_not_owner += o.ignored_not_owner;
        self.steered_out += o.steered_out;
        self.steered_in += o.steered_in;
    }

    /// Counter-wise difference from a baseline.
    pub fn since(&self, base: &CounterSnapshot) -> CounterSnapshot {
        let mut d = self.clone();
        for i in 0..2 {
            d.rx[i] = d.rx[i].wrapping_sub(base.rx[i]);
            d.tx[i] = d.tx[i].wrapping_sub(base.tx[i]);
        }
        for (a, b) in d.drops.iter_mut().zip(base.drops.iter()) {
            *a = a.wrapping_sub(*b);
        }
        d.consumed = d.consumed.wrapping_sub(base.consumed);
        d.fast = d.fast.wrapping_sub(base.fast);
        d.busy_polls = d.busy_polls.wrapping_sub(base.busy_polls);
        d.idle_polls = d.idle_polls.wrapping_sub(base.idle_polls);
        d.ignored_not_owner = d.ignored_not_owner.wrapping_sub(base.ignored_not_owner);
        d.steered_out = d.steered_out.wrapping_sub(base.steered_out);
        d.steered_in = d.steered_in.wrapping_sub(base.steered_in);
        d
    }

    pub fn total_drops(&self) -> u64 {
        self.drops.iter().sum()
    }
}

/// Highest latency the histograms track (10 s), in ns.
pub const LATENCY_MAX_NS: u64 = 10_000_000_000;

/// A fresh latency histogram (3 significant digits, 1 ns .. 10 s).
pub fn new_latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_MAX_NS, 3).expect("constant histogram bounds are valid")
}

/// Per-burst RX-to-TX latency shared with readers. The worker records into a
/// private histogram and merges it here now and then with `try_lock`, so a
/// reader holding the lock never stalls the fast path.
pub struct LatencyShared {
    hist: Mutex<Histogram<u64>>,
}

impl Default for LatencyShared {
    fn default() -> Self {
        LatencyShared {
            hist: Mutex::new(new_latency_histogram()),
        }
    }
}

impl LatencyShared {
    /// Merges `local` in and resets it, unless a reader holds the lock.
    pub fn try_publish(&self, local: &mut Histogram<u64>) -> bool {
        if let Ok(mut h) = self.hist.try_lock() {
            if h.add(&*local).is_ok() {
                local.reset();
            }
            return true;
        }
        false
    }

    /// A copy of what was published so far.
    pub fn snapshot(&self) -> Histogram<u64> {
        match self.hist.lock() {
            Ok(h) => h.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    pub fn reset(&self) {
        if let Ok(mut h) = self.hist.lock() {
            h.reset();
        }
    }
}

/// p50/p99/p99.9/max of a histogram, in ns.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LatencySummary {
    pub count: u64,
    pub p50: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
}

impl LatencySummary {
    pub fn of(h: &Histogram<u64>) -> LatencySummary {
        if h.is_empty() {
            return LatencySummary::default();
        }
        LatencySummary {
            count: h.len(),
            p50: h.value_at_quantile(0.5),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_since_baseline_counts_only_new_events() {
        let c = WorkerCounters::default();
        c.rx(Side::Inside, 5);
        c.drop(DropReason::NoRoute, 2);
        let base = c.snapshot();
        c.rx(Side::Inside, 3);
        c.tx(Side::Outside, 3);
        c.drop(DropReason::NoRoute, 1);
        let d = c.snapshot().since(&base);
        assert_eq!(d.rx, [3, 0]);
        assert_eq!(d.tx, [0, 3]);
        assert_eq!(d.drops[DropReason::NoRoute as usize], 1);
        assert_eq!(d.total_drops(), 1);
    }

    #[test]
    fn published_latency_reaches_readers_and_local_is_reset() {
        let shared = LatencyShared::default();
        let mut local = new_latency_histogram();
        for v in [100u64, 200, 300, 400] {
            local.record(v).unwrap();
        }
        assert!(shared.try_publish(&mut local));
        assert!(local.is_empty());
        let s = LatencySummary::of(&shared.snapshot());
        assert_eq!(s.count, 4);
        assert_eq!(s.p50, 200);
        assert_eq!(s.max, 400);
    }
}
