//! DPDK's longest-prefix-match table (`rte_lpm`, DIR-24-8) behind the
//! router's [`RouteLookup`].

use std::ffi::CString;
use std::ptr::NonNull;

use super::error::DpdkError;
use crate::nf::route::{Route, RouteLookup};

pub struct DpdkLpm {
    raw: NonNull<dpdk_sys::rte_lpm>,
    /// rte_lpm takes depths 1..=32: a default route (/0) is kept here and
    /// answers what the table misses.
    default: Option<u32>,
}

// SAFETY: after construction the table is only read; rte_lpm lookups from
// several lcores at once are safe (DPDK documents lock-free readers).
unsafe impl Send for DpdkLpm {}
// SAFETY: as above.
unsafe impl Sync for DpdkLpm {}

impl DpdkLpm {
    /// Builds the table; the next hop stored for each prefix is the route's
    /// index in `routes`.
    pub fn new(name: &str, routes: &[Route]) -> Result<DpdkLpm, DpdkError> {
        let cname = CString::new(name).map_err(|_| DpdkError::new("lpm name with NUL", 22))?;
        let config = dpdk_sys::rte_lpm_config {
            max_rules: (routes.len() as u32).max(16) * 2,
            // One tbl8 group per prefix longer than /24 (at most).
            number_tbl8s: (routes.iter().filter(|r| r.len > 24).count() as u32 + 256).min(1 << 16),
            flags: 0,
        };
        // SAFETY: cname and config are valid for the call; EAL is up.
        let raw = unsafe { dpdk_sys::rte_lpm_create(cname.as_ptr(), -1, &config) };
        let raw = NonNull::new(raw).ok_or_else(|| DpdkError::from_rte_errno(format!("rte_lpm_create({name})")))?;
        let mut lpm = DpdkLpm { raw, default: None };
        for (i, r) in routes.iter().enumerate() {
            if r.len == 0 {
                lpm.default.get_or_insert(i as u32);
                continue;
            }
            // SAFETY: the table is valid and not yet shared.
            let ret = unsafe { dpdk_sys::rte_lpm_add(lpm.raw.as_ptr(), u32::from(r.prefix), r.len, i as u32) };
            DpdkError::check(&format!("rte_lpm_add({}/{})", r.prefix, r.len), ret)?;
        }
        Ok(lpm)
    }

    /// The same answer through DPDK's `rte_lpm_lookup`, a call per address
    /// (the reference [`RouteLookup::lookup`] is tested and benchmarked
    /// against).
    pub fn lookup_via_call(&self, dst: u32) -> Option<u32> {
        let mut hop = 0u32;
        // SAFETY: the table is valid and read-only; hop is a valid out-pointer.
        let ret = unsafe { dpdk_sys::rte_lpm_lookup(self.raw.as_ptr(), dst, &mut hop) };
        if ret == 0 {
            Some(hop)
        } else {
            self.default
        }
    }
}

// The entries are 32-bit bitfields (next hop: 24, valid: 1, valid_group: 1,
// depth: 6) that DPDK itself reads as a u32 on a little-endian CPU.
#[cfg(not(target_endian = "little"))]
compile_error!("DpdkLpm::lookup reads rte_lpm entries in little-endian layout");

impl RouteLookup for DpdkLpm {
    /// `rte_lpm_lookup` is a `static inline` function: reached through the
    /// bindgen wrapper it costs a call per packet. This is the same
    /// DIR-24-8 read of the same tables, inlined into the router: one load,
    /// a second for prefixes longer than /24.
    #[inline]
    fn lookup(&self, dst: u32) -> Option<u32> {
        let lpm = self.raw.as_ptr();
        // SAFETY: tbl24 has 2^24 entries and dst >> 8 < 2^24; the table is
        // read-only once built (no writer runs while workers read it).
        let mut e = unsafe {
            let tbl24 = std::ptr::addr_of!((*lpm).tbl24) as *const u32;
            *tbl24.add((dst >> 8) as usize)
        };
        let ext = dpdk_sys::RTE_LPM_VALID_EXT_ENTRY_BITMASK;
        if e & ext == ext {
            let i = (dst & 0xff) + (e & 0x00ff_ffff) * dpdk_sys::RTE_LPM_TBL8_GROUP_NUM_ENTRIES;
            // SAFETY: a valid extended entry names a tbl8 group rte_lpm
            // allocated (group index < number_tbl8s), and dst & 0xff stays
            // inside its 256 entries; read-only as above.
            e = unsafe { *((*lpm).tbl8 as *const u32).add(i as usize) };
        }
        if e & dpdk_sys::RTE_LPM_LOOKUP_SUCCESS != 0 {
            Some(e & 0x00ff_ffff)
        } else {
            self.default
        }
    }
}

impl Drop for DpdkLpm {
    fn drop(&mut self) {
        // SAFETY: the workers that read it have stopped (the node drops its
        // functions after joining them).
        unsafe { dpdk_sys::rte_lpm_free(self.raw.as_ptr()) }
    }
}
