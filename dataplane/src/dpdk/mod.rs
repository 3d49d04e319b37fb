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

/// Asks the CPU to bring the cache line holding `*p` into L1 (DPDK's
/// `rte_prefetch0`): for lookups of a whole burst issued before the first,
/// so their misses overlap.
#[inline(always)]
pub fn prefetch<T>(p: &T) {
    // SAFETY: a prefetch is a hint: it never faults and changes no memory;
    // `p` is a valid reference besides.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p as *const T as *const i8);
    }
}
