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
}

impl RouteLookup for DpdkLpm {
    #[inline]
    fn lookup(&self, dst: u32) -> Option<u32> {
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

impl Drop for DpdkLpm {
    fn drop(&mut self) {
        // SAFETY: the workers that read it have stopped (the node drops its
        // functions after joining them).
        unsafe { dpdk_sys::rte_lpm_free(self.raw.as_ptr()) }
    }
}
