//! Virtual devices created at run time: `net_ring` ports over an `rte_ring`
//! (a port whose TX fills a ring that its RX drains, handy to make a TX queue
//! refuse packets) and any vdev by name and devargs (`rte_vdev_init`).

use std::ffi::CString;
use std::ptr::NonNull;

use super::error::DpdkError;
use super::port::Port;

/// `RING_F_SP_ENQ | RING_F_SC_DEQ`: one producer (TX) and one consumer (RX).
const SINGLE_PRODUCER_CONSUMER: u32 = 0x0001 | 0x0002;

/// A ring-backed port. The ring outlives the port (dropped after it).
pub struct RingPort {
    pub port: Port,
    ring: NonNull<dpdk_sys::rte_ring>,
}

impl RingPort {
    /// A port whose TX enqueues into a ring of `size` slots (a power of two;
    /// usable capacity `size - 1`) and whose RX dequeues from it.
    pub fn create(name: &str, size: u32) -> Result<RingPort, DpdkError> {
        let cname = CString::new(name).map_err(|_| DpdkError::new("ring name with NUL", 22))?;
        // SAFETY: cname is valid; socket -1 = any.
        let ring = unsafe {
            dpdk_sys::rte_ring_create(cname.as_ptr(), size, -1, SINGLE_PRODUCER_CONSUMER)
        };
        let ring = NonNull::new(ring)
            .ok_or_else(|| DpdkError::from_rte_errno(format!("rte_ring_create({name})")))?;
        // SAFETY: ring is a valid ring; DPDK names the port after it.
        let ret = unsafe { dpdk_sys::rte_eth_from_ring(ring.as_ptr()) };
        if ret < 0 {
            // SAFETY: no port uses the ring yet.
            unsafe { dpdk_sys::rte_ring_free(ring.as_ptr()) };
            return Err(DpdkError::from_rte_errno(format!(
                "rte_eth_from_ring({name})"
            )));
        }
        let port = Port::by_name(name)?;
        Ok(RingPort { port, ring })
    }

    /// Packets sitting in the ring (sent, not yet received).
    pub fn queued(&self) -> u32 {
        // SAFETY: the ring is valid while self lives.
        unsafe { dpdk_sys::rte_ring_count(self.ring.as_ptr()) }
    }
}

impl Drop for RingPort {
    fn drop(&mut self) {
        if let Err(e) = self.port.close() {
            log::warn!("{e}");
        }
        // SAFETY: the port was closed above; nothing references the ring.
        unsafe { dpdk_sys::rte_ring_free(self.ring.as_ptr()) };
    }
}

/// Creates a virtual device (`net_null0`, `net_af_packet1`, ...) with devargs.
pub fn vdev_create(name: &str, args: &str) -> Result<Port, DpdkError> {
    let cname = CString::new(name).map_err(|_| DpdkError::new("vdev name with NUL", 22))?;
    let cargs = CString::new(args).map_err(|_| DpdkError::new("vdev args with NUL", 22))?;
    // SAFETY: both strings are valid for the call; DPDK copies them.
    let ret = unsafe { dpdk_sys::rte_vdev_init(cname.as_ptr(), cargs.as_ptr()) };
    DpdkError::check(&format!("rte_vdev_init({name},{args})"), ret)?;
    Port::by_name(name)
}
