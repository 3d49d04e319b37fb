//! Packet-buffer pools (`rte_pktmbuf_pool_create`).

use std::ffi::CString;
use std::ptr::NonNull;

use super::error::DpdkError;

/// Default data room: 2 KiB of frame plus DPDK's 128 B headroom.
pub const DEFAULT_DATA_ROOM: u16 = 2048 + dpdk_sys::RTE_PKTMBUF_HEADROOM as u16;

/// A pool of mbufs. Freed on drop, so it must outlive every mbuf taken from
/// it and every port queue set up with it.
pub struct Mempool {
    raw: NonNull<dpdk_sys::rte_mempool>,
    name: String,
}

// SAFETY: rte_mempool is designed for concurrent use from many lcores (its
// get/put paths are lock-free rings plus per-lcore caches).
unsafe impl Send for Mempool {}
// SAFETY: as above; shared references only call thread-safe DPDK functions.
unsafe impl Sync for Mempool {}

impl Mempool {
    /// Creates a pool of `n` mbufs with a per-lcore cache of `cache` and the
    /// given data room, on `socket` (-1 = any).
    pub fn new(name: &str, n: u32, cache: u32, data_room: u16, socket: i32) -> Result<Mempool, DpdkError> {
        let cname = CString::new(name).map_err(|_| DpdkError::new("mempool name with NUL", 22))?;
        // SAFETY: cname is a valid C string; EAL is up (a Mempool is only made
        // after Eal::init, else DPDK returns NULL with rte_errno set).
        let raw = unsafe { dpdk_sys::rte_pktmbuf_pool_create(cname.as_ptr(), n, cache, 0, data_room, socket) };
        NonNull::new(raw)
            .map(|raw| Mempool {
                raw,
                name: name.to_string(),
            })
            .ok_or_else(|| DpdkError::from_rte_errno(format!("rte_pktmbuf_pool_create({name}, n={n})")))
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn as_ptr(&self) -> *mut dpdk_sys::rte_mempool {
        self.raw.as_ptr()
    }

    /// Mbufs currently taken from the pool (mbufs parked in per-lcore caches
    /// count as available: they are not leaked).
    pub fn in_use(&self) -> u32 {
        // SAFETY: the pool is valid for self's lifetime.
        unsafe { dpdk_sys::rte_mempool_in_use_count(self.raw.as_ptr()) }
    }

    /// Mbufs available in the pool.
    pub fn available(&self) -> u32 {
        // SAFETY: the pool is valid for self's lifetime.
        unsafe { dpdk_sys::rte_mempool_avail_count(self.raw.as_ptr()) }
    }

    /// Pool size.
    pub fn capacity(&self) -> u32 {
        // SAFETY: the pool is valid; `size` is set at creation and never changes.
        unsafe { (*self.raw.as_ptr()).size }
    }
}

impl Drop for Mempool {
    fn drop(&mut self) {
        // SAFETY: we own the pool; callers drop ports and mbufs first.
        unsafe { dpdk_sys::rte_mempool_free(self.raw.as_ptr()) }
    }
}
