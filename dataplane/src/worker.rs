//! The run-to-completion poll loop of one shard (one worker lcore).
//!
//! Worker `q` owns RX/TX queue `q` of both data ports and all the flow state
//! of its shard: no locks on the fast path. Each iteration, per data port:
//!
//! 1. `rx_burst` from queue `q`;
//! 2. (replication issue) stamp sequence and time, replicate before anything
//!    else: [`Worker::stage_replicate`] is where that step lives;
//! 3. run the network function over each frame, sorting the survivors into
//!    one TX batch per egress port;
//! 4. if this node owns the egress TX queue, `tx_burst`, counting what the
//!    NIC refused; otherwise free the batch (a backup never transmits);
//! 5. record the burst's RX-to-TX latency.
//!
//! Then it polls its control flags, and sleeps `idle_sleep_us` when a whole
//! iteration found nothing (so several nodes can share a small machine).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hdrhistogram::Histogram;

use crate::dpdk::eal::{rdtsc, tsc_hz};
use crate::dpdk::{Mbuf, RxBurst, RxQueue, TxBatch, TxQueue};
use crate::frame::Frame;
use crate::nf::{DropReason, NetworkFunction, PacketCtx, Side, Verdict};
use crate::ownership::TxOwnership;
use crate::stats::{bump, new_latency_histogram, LatencyShared, WorkerCounters};

/// Largest burst a worker handles (the `burst` setting is capped to it).
pub const MAX_BURST: usize = 256;

/// How often (in TSC-derived ns) a worker merges its latency histogram into
/// the shared one.
const LATENCY_PUBLISH_NS: u64 = 100_000_000;

/// What a worker shares with the control thread.
pub struct WorkerShared {
    pub shard: u16,
    pub counters: WorkerCounters,
    pub latency: LatencyShared,
    /// `start`/`stop` of the interactive prompt: when false the worker does
    /// not poll its queues.
    pub forwarding: AtomicBool,
}

impl WorkerShared {
    pub fn new(shard: u16) -> Arc<WorkerShared> {
        Arc::new(WorkerShared {
            shard,
            counters: WorkerCounters::default(),
            latency: LatencyShared::default(),
            forwarding: AtomicBool::new(true),
        })
    }
}

/// Queues of one data port as seen by one worker.
#[derive(Clone, Copy, Debug)]
pub struct DataQueues {
    pub rx: RxQueue,
    pub tx: TxQueue,
}

/// Everything a worker needs, moved onto its lcore.
pub struct Worker<F: NetworkFunction> {
    pub shard: u16,
    pub nf: F,
    /// Indexed by [`Side`].
    pub data: [DataQueues; 2],
    pub burst: usize,
    pub idle_sleep_us: u64,
    pub ownership: Arc<TxOwnership>,
    pub shared: Arc<WorkerShared>,
    pub quit: Arc<AtomicBool>,
}

/// Per-iteration scratch space, allocated once per worker.
struct Scratch {
    rx: RxBurst<MAX_BURST>,
    tx: [TxBatch<MAX_BURST>; 2],
    local_latency: Histogram<u64>,
}

impl<F: NetworkFunction> Worker<F> {
    /// Runs until `quit` is set. Everything still held is freed on return.
    pub fn run(mut self) {
        let mut s = Scratch {
            rx: RxBurst::default(),
            tx: [TxBatch::default(), TxBatch::default()],
            local_latency: new_latency_histogram(),
        };
        let clock = TscClock::new(tsc_hz());
        let publish_ticks = clock.ticks(LATENCY_PUBLISH_NS);
        let idle = Duration::from_micros(self.idle_sleep_us);
        let burst = self.burst.clamp(1, MAX_BURST);
        let shard = self.shard as usize;
        let mut last_publish = rdtsc();

        while !self.quit.load(Ordering::Relaxed) {
            if !self.shared.forwarding.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(1));
                continue;
            }
            // One TSC read starts the iteration; each busy burst ends with
            // one more, which also starts the next burst's latency window.
            let mut t = rdtsc();
            let mut busy = false;
            for side in Side::ALL {
                let n = self.data[side.index()].rx.rx_burst_n(&mut s.rx, burst);
                if n == 0 {
                    continue;
                }
                busy = true;
                if !self.ownership.owns(side, shard) {
                    // Not the owner of this port: a backup ignores what
                    // arrives on its data ports (the primary replicates it).
                    bump(&self.shared.counters.ignored_not_owner, n as u64);
                    s.rx.clear();
                    continue;
                }
                // Ownership of each egress queue is read once per burst.
                let owned = [
                    self.ownership.owns(Side::Inside, shard),
                    self.ownership.owns(Side::Outside, shard),
                ];
                self.shared.counters.rx(side, n as u64);
                self.stage_process(side, clock.ns(t), &mut s);
                self.stage_transmit(&owned, &mut s);
                let end = rdtsc();
                s.local_latency
                    .saturating_record(clock.ns(end.wrapping_sub(t)).max(1));
                t = end;
            }
            if busy {
                bump(&self.shared.counters.busy_polls, 1);
            } else {
                bump(&self.shared.counters.idle_polls, 1);
                if !idle.is_zero() {
                    std::thread::sleep(idle);
                }
            }
            if t.wrapping_sub(last_publish) > publish_ticks
                && self.shared.latency.try_publish(&mut s.local_latency)
            {
                last_publish = t;
            }
        }
        self.shared.latency.try_publish(&mut s.local_latency);
    }

    /// Runs the function over the burst and sorts survivors by egress port.
    #[inline]
    fn stage_process(&mut self, side: Side, now_ns: u64, s: &mut Scratch) {
        let ctx = PacketCtx {
            ingress: side,
            now_ns,
        };
        let counters = &self.shared.counters;
        if F::BURST_VERDICT {
            match self
                .nf
                .process(&mut Frame::new_in_range(&mut [], 0, 0), &ctx)
            {
                Verdict::Forward(out) => {
                    let moved = s.tx[out.index()].append_burst(&mut s.rx);
                    debug_assert_eq!(moved, s.tx[out.index()].len().min(moved));
                }
                Verdict::Drop(r) => counters.drop(r, s.rx.len() as u64),
                Verdict::Consumed => bump(&counters.consumed, s.rx.len() as u64),
            }
            s.rx.clear();
            return;
        }
        while let Some(mut m) = s.rx.pop() {
            if m.nb_segs() != 1 {
                counters.drop(DropReason::MultiSegment, 1);
                continue;
            }
            let verdict = {
                let mut frame = m.frame();
                self.nf.process(&mut frame, &ctx)
            };
            match verdict {
                Verdict::Forward(out) => push_or_drop(&mut s.tx[out.index()], m, counters),
                Verdict::Drop(r) => counters.drop(r, 1),
                Verdict::Consumed => bump(&counters.consumed, 1),
            }
        }
    }

    /// Sends each egress batch if this node owns the queue; frees it if not.
    #[inline]
    fn stage_transmit(&mut self, owned: &[bool; 2], s: &mut Scratch) {
        for out in Side::ALL {
            let batch = &mut s.tx[out.index()];
            if batch.is_empty() {
                continue;
            }
            if !owned[out.index()] {
                let n = batch.clear();
                bump(&self.shared.counters.ignored_not_owner, n as u64);
                continue;
            }
            let r = self.data[out.index()].tx.tx_burst(batch);
            self.shared.counters.tx(out, r.sent as u64);
            if r.refused > 0 {
                self.shared
                    .counters
                    .drop(DropReason::TxRefused, r.refused as u64);
            }
        }
    }
}

/// TSC ticks to nanoseconds with one 128-bit multiply (no float on the
/// fast path): ns = ticks * ceil(1e9 << 48 / hz) >> 48, exact for whole
/// nanoseconds up to 2^48 ticks (about a day at 3 GHz), then off by at
/// most a nanosecond per 2^48 ticks.
#[derive(Clone, Copy, Debug)]
pub struct TscClock {
    hz: u64,
    mult: u128,
}

impl TscClock {
    pub fn new(hz: u64) -> TscClock {
        let hz = hz.max(1);
        TscClock {
            hz,
            mult: (1_000_000_000u128 << 48).div_ceil(hz as u128),
        }
    }

    #[inline(always)]
    pub fn ns(&self, ticks: u64) -> u64 {
        ((ticks as u128 * self.mult) >> 48) as u64
    }

    /// Ticks in `ns` nanoseconds.
    pub fn ticks(&self, ns: u64) -> u64 {
        (ns as u128 * self.hz as u128 / 1_000_000_000) as u64
    }
}

#[inline]
fn push_or_drop(batch: &mut TxBatch<MAX_BURST>, m: Mbuf, counters: &WorkerCounters) {
    // A batch holds a whole RX burst, so it cannot overflow; count if it does.
    if batch.push(m).is_err() {
        counters.drop(DropReason::TxRefused, 1);
    }
}

#[cfg(test)]
mod tests {
    use super::TscClock;

    #[test]
    fn tsc_clock_converts_both_ways_at_2_5_ghz() {
        let c = TscClock::new(2_500_000_000);
        assert_eq!(c.ns(2_500_000_000), 1_000_000_000);
        assert_eq!(c.ns(25), 10);
        assert_eq!(c.ticks(100_000_000), 250_000_000);
    }
}
