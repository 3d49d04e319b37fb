//! Virtual devices created at run time: `net_ring` ports over `rte_ring`s,
//! and any vdev by name and devargs (`rte_vdev_init`).
//!
//! A ring port is the test bench of the safe layer: what its TX sends lands
//! in a ring the test can read ([`RingPort::take_sent`]), what the test puts
//! in its RX ring ([`RingPort::inject`]) is what the port receives, and a
//! small ring makes a TX queue refuse packets.

use std::ffi::CString;
use std::os::raw::c_void;
use std::ptr::NonNull;

use super::error::DpdkError;
use super::mbuf::Mbuf;
use super::mempool::Mempool;
use super::port::{Port, PortConfig};

/// `RING_F_SP_ENQ | RING_F_SC_DEQ`: one producer and one consumer per ring.
const SINGLE_PRODUCER_CONSUMER: u32 = 0x0001 | 0x0002;
/// `RING_F_SC_DEQ`: any number of producers, one consumer.
const SINGLE_CONSUMER: u32 = 0x0002;

/// A ring-backed port. Its rings outlive it (freed after the port closes).
pub struct RingPort {
    pub port: Port,
    rx: NonNull<dpdk_sys::rte_ring>,
    /// Equal to `rx` for a loop-back port.
    tx: NonNull<dpdk_sys::rte_ring>,
}

fn ring(name: &str, size: u32) -> Result<NonNull<dpdk_sys::rte_ring>, DpdkError> {
    ring_with(name, size, SINGLE_PRODUCER_CONSUMER)
}

fn ring_with(name: &str, size: u32, flags: u32) -> Result<NonNull<dpdk_sys::rte_ring>, DpdkError> {
    let cname = CString::new(name).map_err(|_| DpdkError::new("ring name with NUL", 22))?;
    // SAFETY: cname is valid; socket -1 = any.
    let r = unsafe { dpdk_sys::rte_ring_create(cname.as_ptr(), size, -1, flags) };
    NonNull::new(r).ok_or_else(|| DpdkError::from_rte_errno(format!("rte_ring_create({name})")))
}

impl RingPort {
    /// A loop-back port: TX enqueues into a ring of `size` slots (a power of
    /// two; usable capacity `size - 1`) that RX dequeues from.
    pub fn create(name: &str, size: u32) -> Result<RingPort, DpdkError> {
        let r = ring(name, size)?;
        Self::from_rings(name, r, r)
    }

    /// A port with separate RX and TX rings: nothing it sends comes back.
    pub fn create_split(name: &str, rx_size: u32, tx_size: u32) -> Result<RingPort, DpdkError> {
        let rx = ring(&format!("{name}_rx"), rx_size)?;
        let tx = match ring(&format!("{name}_tx"), tx_size) {
            Ok(t) => t,
            Err(e) => {
                // SAFETY: rx was just created and is unused.
                unsafe { dpdk_sys::rte_ring_free(rx.as_ptr()) };
                return Err(e);
            }
        };
        Self::from_rings(name, rx, tx)
    }

    /// The port configured with `conf` over `pool` and started.
    pub fn started(mut self, conf: &PortConfig, pool: &Mempool) -> Result<RingPort, DpdkError> {
        self.port.configure_and_start(conf, pool)?;
        Ok(self)
    }

    /// A second port over this split port's rings, crosswise: what one
    /// sends the other receives — a point-to-point link between two nodes
    /// of one process. The rings stay this port's, so the peer borrows it
    /// (and is closed first). `inject`/`take_sent` on this port would race
    /// the peer's queues: a linked port is left to the two nodes.
    pub fn peer(&self, name: &str) -> Result<RingPeer<'_>, DpdkError> {
        if self.rx == self.tx {
            return Err(DpdkError::new("a loop-back ring port has no peer", 22));
        }
        let id = port_over(name, self.tx, self.rx)?;
        Ok(RingPeer {
            port: Port::from_id(id),
            _rings: std::marker::PhantomData,
        })
    }

    fn from_rings(
        name: &str,
        rx: NonNull<dpdk_sys::rte_ring>,
        tx: NonNull<dpdk_sys::rte_ring>,
    ) -> Result<RingPort, DpdkError> {
        let id = match port_over(name, rx, tx) {
            Ok(id) => id,
            Err(e) => {
                // SAFETY: no port uses the rings.
                unsafe {
                    dpdk_sys::rte_ring_free(rx.as_ptr());
                    if tx != rx {
                        dpdk_sys::rte_ring_free(tx.as_ptr());
                    }
                }
                return Err(e);
            }
        };
        Ok(RingPort {
            port: Port::from_id(id),
            rx,
            tx,
        })
    }

    /// Packets sitting in the port's rings (sent and not yet received or
    /// taken, plus injected and not yet received).
    pub fn queued(&self) -> u32 {
        // SAFETY: the rings are valid while self lives.
        unsafe {
            let n = dpdk_sys::rte_ring_count(self.rx.as_ptr());
            if self.tx == self.rx {
                n
            } else {
                n + dpdk_sys::rte_ring_count(self.tx.as_ptr())
            }
        }
    }

    /// Puts packets where the port's RX will find them, in order. Returns
    /// those that did not fit: the tail from the first one refused (so a
    /// caller that retries them keeps the order).
    pub fn inject(&self, pkts: Vec<Mbuf>) -> Vec<Mbuf> {
        let raw: Vec<*mut c_void> = pkts.into_iter().map(|m| m.into_raw() as *mut c_void).collect();
        // SAFETY: the ring is valid; raw holds raw.len() mbuf pointers we
        // own, and the ring owns the first n it takes.
        let n = unsafe {
            dpdk_sys::rte_ring_enqueue_burst(self.rx.as_ptr(), raw.as_ptr(), raw.len() as u32, std::ptr::null_mut())
        } as usize;
        raw[n..]
            .iter()
            // SAFETY: the ring refused these; they are still ours.
            .filter_map(|p| unsafe { Mbuf::from_raw(*p as *mut dpdk_sys::rte_mbuf) })
            .collect()
    }

    /// Takes up to `max` packets the port transmitted.
    pub fn take_sent(&self, max: usize) -> Vec<Mbuf> {
        let mut objs = vec![std::ptr::null_mut::<c_void>(); max];
        // SAFETY: objs has room for max pointers; dequeued mbufs become ours.
        let n = unsafe {
            dpdk_sys::rte_ring_dequeue_burst(self.tx.as_ptr(), objs.as_mut_ptr(), max as u32, std::ptr::null_mut())
        };
        objs.truncate(n as usize);
        objs.into_iter()
            // SAFETY: each pointer is an mbuf the ring held for us.
            .filter_map(|p| unsafe { Mbuf::from_raw(p as *mut dpdk_sys::rte_mbuf) })
            .collect()
    }
}

/// A `net_ring` port over one receive and one transmit ring.
fn port_over(name: &str, rx: NonNull<dpdk_sys::rte_ring>, tx: NonNull<dpdk_sys::rte_ring>) -> Result<u16, DpdkError> {
    let cname = CString::new(name).map_err(|_| DpdkError::new("port name with NUL", 22))?;
    let rxq = [rx.as_ptr()];
    let txq = [tx.as_ptr()];
    // SAFETY: both arrays hold one valid ring; DPDK keeps the pointers, and
    // the rings outlive the port (the callers free them after close).
    let ret = unsafe { dpdk_sys::rte_eth_from_rings(cname.as_ptr(), rxq.as_ptr(), 1, txq.as_ptr(), 1, 0) };
    if ret < 0 {
        return Err(DpdkError::from_rte_errno(format!("rte_eth_from_rings({name})")));
    }
    Ok(ret as u16)
}

/// The other end of a [`RingPort`]'s link ([`RingPort::peer`]).
pub struct RingPeer<'a> {
    pub port: Port,
    _rings: std::marker::PhantomData<&'a RingPort>,
}

impl RingPeer<'_> {
    /// The port configured with `conf` over `pool` and started.
    pub fn started(mut self, conf: &PortConfig, pool: &Mempool) -> Result<Self, DpdkError> {
        self.port.configure_and_start(conf, pool)?;
        Ok(self)
    }
}

impl Drop for RingPeer<'_> {
    fn drop(&mut self) {
        if let Err(e) = self.port.close() {
            log::warn!("{e}");
        }
    }
}

impl Drop for RingPort {
    fn drop(&mut self) {
        if let Err(e) = self.port.close() {
            log::warn!("{e}");
        }
        // Free what is still queued, then the rings (nothing uses them now).
        for r in [self.rx, self.tx] {
            loop {
                let mut obj = [std::ptr::null_mut::<c_void>(); 1];
                // SAFETY: the ring is valid; a dequeued mbuf is ours to free.
                let n =
                    unsafe { dpdk_sys::rte_ring_dequeue_burst(r.as_ptr(), obj.as_mut_ptr(), 1, std::ptr::null_mut()) };
                if n == 0 {
                    break;
                }
                // SAFETY: as above.
                drop(unsafe { Mbuf::from_raw(obj[0] as *mut dpdk_sys::rte_mbuf) });
            }
        }
        // SAFETY: the port is closed; the rings are unreferenced.
        unsafe {
            dpdk_sys::rte_ring_free(self.rx.as_ptr());
            if self.tx != self.rx {
                dpdk_sys::rte_ring_free(self.tx.as_ptr());
            }
        }
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

/// A ring of mbufs into one lcore (any number of producers, one consumer):
/// the software steering of replication frames to the shard that owns them.
pub struct MbufRing {
    ring: NonNull<dpdk_sys::rte_ring>,
}

// SAFETY: an MP/SC rte_ring takes enqueues from any thread and dequeues
// from one; lockstep dequeues only on the shard's own worker.
unsafe impl Send for MbufRing {}
// SAFETY: as above.
unsafe impl Sync for MbufRing {}

impl MbufRing {
    pub fn new(name: &str, size: u32) -> Result<MbufRing, DpdkError> {
        Ok(MbufRing {
            ring: ring_with(name, size, SINGLE_CONSUMER)?,
        })
    }

    /// Enqueues one mbuf; hands it back if the ring is full.
    #[inline]
    pub fn enqueue(&self, m: Mbuf) -> Result<(), Mbuf> {
        let p = m.into_raw() as *mut c_void;
        let objs = [p];
        // SAFETY: the ring is valid; on success it owns the pointer.
        let n = unsafe { dpdk_sys::rte_ring_enqueue_burst(self.ring.as_ptr(), objs.as_ptr(), 1, std::ptr::null_mut()) };
        if n == 1 {
            return Ok(());
        }
        // SAFETY: refused, so still ours.
        match unsafe { Mbuf::from_raw(p as *mut dpdk_sys::rte_mbuf) } {
            Some(m) => Err(m),
            None => Ok(()),
        }
    }

    /// Dequeues up to `out`'s spare capacity, appending to it.
    #[inline]
    pub fn dequeue_into(&self, out: &mut Vec<Mbuf>, max: usize) -> usize {
        let mut objs = [std::ptr::null_mut::<c_void>(); 64];
        let want = max.min(objs.len());
        // SAFETY: objs has room for `want` pointers; dequeued mbufs are ours.
        let n = unsafe {
            dpdk_sys::rte_ring_dequeue_burst(self.ring.as_ptr(), objs.as_mut_ptr(), want as u32, std::ptr::null_mut())
        } as usize;
        for p in &objs[..n] {
            // SAFETY: each pointer is an mbuf the ring held for us.
            if let Some(m) = unsafe { Mbuf::from_raw(*p as *mut dpdk_sys::rte_mbuf) } {
                out.push(m);
            }
        }
        n
    }
}

impl Drop for MbufRing {
    fn drop(&mut self) {
        let mut rest = Vec::new();
        while self.dequeue_into(&mut rest, 64) > 0 {
            rest.clear();
        }
        // SAFETY: both lcores using the ring have stopped (the node drops
        // rings after joining its workers).
        unsafe { dpdk_sys::rte_ring_free(self.ring.as_ptr()) };
    }
}
