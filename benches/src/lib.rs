//! Benchmark programs of lockstep, run by `scripts/bench.sh`:
//!
//! - `nat_scale`: the NAT with a million sessions — insert rate, packets per
//!   second through a full table, bytes of memory per session (pure code, no
//!   EAL, so the numbers are the function's own).
//! - `lpm`: DPDK's `rte_lpm` against the Rust table the tests use, the
//!   measurement behind the router's choice of `rte_lpm`.
//! - `backup_drain`: how many records per second a backup worker follows
//!   (the rate a primary can keep up with this backup in step).
//!
//! The side-by-side with `dpdk-testpmd` is `tools/compare.py`.

/// A linear congruential generator: the same sequence on every run.
pub struct Lcg(pub u64);

impl Lcg {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 16
    }
}

/// Resident memory of this process, bytes.
pub fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1).and_then(|p| p.parse::<u64>().ok()))
        .map(|pages| pages * 4096)
        .unwrap_or(0)
}
