//! The node's clock: TSC ticks turned into nanoseconds without floats.
//! Workers, the control thread and the replication headers all use it, so
//! their timestamps compare.

use crate::dpdk::eal::{rdtsc, tsc_hz};

/// TSC ticks to nanoseconds with one 128-bit multiply: ns = ticks *
/// ceil(1e9 << 48 / hz) >> 48, exact for whole nanoseconds up to 2^48 ticks
/// (about a day at 3 GHz), then off by at most a nanosecond per 2^48 ticks.
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

    /// The clock of this machine (EAL must be up).
    pub fn system() -> TscClock {
        TscClock::new(tsc_hz())
    }

    #[inline(always)]
    pub fn ns(&self, ticks: u64) -> u64 {
        ((ticks as u128 * self.mult) >> 48) as u64
    }

    /// Ticks in `ns` nanoseconds.
    pub fn ticks(&self, ns: u64) -> u64 {
        (ns as u128 * self.hz as u128 / 1_000_000_000) as u64
    }

    /// Now, in ns.
    #[inline(always)]
    pub fn now_ns(&self) -> u64 {
        self.ns(rdtsc())
    }
}

#[cfg(test)]
mod tests {
    use super::TscClock;

    #[test]
    fn converts_both_ways_at_2_5_ghz() {
        let c = TscClock::new(2_500_000_000);
        assert_eq!(c.ns(2_500_000_000), 1_000_000_000);
        assert_eq!(c.ns(25), 10);
        assert_eq!(c.ticks(100_000_000), 250_000_000);
    }
}
