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

/// A 64-byte UDP frame (60 + FCS) to the benchmarks' virtual MAC
/// 02:00:5e:00:01:01, from `src`:`sport` to `dst`:9000, IPv4 header
/// checksum filled (the UDP checksum left 0, as UDP allows).
pub fn udp64(src: [u8; 4], sport: u16, dst: [u8; 4]) -> [u8; 60] {
    let mut f = [0u8; 60];
    f[0..6].copy_from_slice(&[2, 0, 0x5e, 0, 1, 1]);
    f[6..12].copy_from_slice(&[2, 0, 0, 0, 1, 2]);
    f[12..14].copy_from_slice(&[8, 0]);
    f[14] = 0x45;
    f[16..18].copy_from_slice(&46u16.to_be_bytes());
    f[22] = 64;
    f[23] = 17;
    f[26..30].copy_from_slice(&src);
    f[30..34].copy_from_slice(&dst);
    f[34..36].copy_from_slice(&sport.to_be_bytes());
    f[36..38].copy_from_slice(&9000u16.to_be_bytes());
    f[38..40].copy_from_slice(&26u16.to_be_bytes());
    let c = dataplane::wire::checksum::checksum(&f[14..34]);
    f[24..26].copy_from_slice(&c.to_be_bytes());
    f
}
