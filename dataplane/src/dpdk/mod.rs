//! The safe DPDK layer. Every `unsafe` block of lockstep outside `dpdk-sys`
//! lives under this module.

pub mod eal;
pub mod error;
pub mod huge;
pub mod lcore;
pub mod lpm;
pub mod mbuf;
pub mod mempool;
pub mod port;
pub mod ring;
pub mod telemetry;

pub use eal::Eal;
pub use error::DpdkError;
pub use mbuf::Mbuf;
pub use mempool::Mempool;
pub use port::{Port, PortConfig, PortInfo, PortStats, RxBurst, RxQueue, TxBatch, TxOutcome, TxQueue};

/// Asks the CPU to bring the cache lines holding `*p` into L1 (DPDK's
/// `rte_prefetch0`): for lookups of a whole burst issued before the first,
/// so their misses overlap. A value that straddles two lines (a 40-byte
/// one does, one time in two) gets both: a field on the second line would
/// otherwise miss as if nothing had been asked for (when the NAT's slab
/// entries were 40 bytes, a million-session NAT spent ~25% longer per
/// packet with only the first line asked for).
#[inline(always)]
pub fn prefetch<T>(p: &T) {
    let first = p as *const T as *const i8;
    let second = second_line(first as usize, std::mem::size_of::<T>());
    // SAFETY: a prefetch is a hint: it never faults and changes no memory;
    // `p` is a valid reference besides, and `second` an address inside it.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(first);
        if let Some(off) = second {
            std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(first.wrapping_add(off));
        }
    }
}

/// Where (as an offset from `addr`) the last byte of a `size`-byte value
/// at `addr` lies, if on another 64-byte line than the first byte. Values
/// of more than two lines are not what the lookups prefetch.
#[inline(always)]
fn second_line(addr: usize, size: usize) -> Option<usize> {
    let last = size.checked_sub(1)?;
    (addr >> 6 != (addr + last) >> 6).then_some(last)
}

#[cfg(test)]
mod tests {
    use super::second_line;

    #[test]
    fn a_value_within_one_line_has_no_second_line() {
        assert_eq!(second_line(0, 40), None);
        assert_eq!(second_line(64 + 24, 40), None, "ends on the line's last byte");
        assert_eq!(second_line(128, 64), None, "a whole aligned line");
        assert_eq!(second_line(4096 + 63, 1), None);
        assert_eq!(second_line(100, 0), None, "nothing to fetch");
    }

    #[test]
    fn a_value_across_a_line_boundary_has_its_last_byte_fetched_too() {
        assert_eq!(second_line(40, 40), Some(39));
        assert_eq!(second_line(64 + 25, 40), Some(39), "one byte over");
        assert_eq!(second_line(1, 64), Some(63), "an unaligned line");
    }

    #[test]
    fn half_of_a_slab_of_40_byte_entries_straddles_lines() {
        let straddling = (0..64usize).filter(|i| second_line(i * 40, 40).is_some()).count();
        assert_eq!(straddling, 32);
    }
}
