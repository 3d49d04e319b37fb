//! Ethernet ports opened by DPDK device name (`net_af_packet0`,
//! `0000:03:00.0`, ...), with one RX and one TX queue per worker.

use std::ffi::{CStr, CString};
use std::os::raw::c_char;

use super::error::DpdkError;
use super::mbuf::Mbuf;
use super::mempool::Mempool;

/// rte_ethdev's RSS hash-function bits (C macros that bindgen cannot see).
mod rss {
    pub const IPV4: u64 = 1 << 2;
    pub const NONFRAG_IPV4_TCP: u64 = 1 << 4;
    pub const NONFRAG_IPV4_UDP: u64 = 1 << 5;
}

/// rte_ethdev's RX offload bits (C macros, as above).
mod rx_offload {
    pub const IPV4_CKSUM: u64 = 1 << 1;
}

/// How to set a port up.
#[derive(Clone, Debug)]
pub struct PortConfig {
    /// RX queues = TX queues = workers (queue q belongs to worker q).
    pub queues: u16,
    pub rx_desc: u16,
    pub tx_desc: u16,
    pub promiscuous: bool,
    /// Ask the device to verify received IPv4 header checksums, when it
    /// can ([`Port::rx_ip_checksum`] says whether it does).
    pub rx_ip_checksum: bool,
}

impl Default for PortConfig {
    fn default() -> Self {
        PortConfig {
            queues: 1,
            rx_desc: 1024,
            tx_desc: 1024,
            promiscuous: true,
            rx_ip_checksum: true,
        }
    }
}

/// Counters kept by the driver (`rte_eth_stats`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortStats {
    pub ipackets: u64,
    pub opackets: u64,
    pub ibytes: u64,
    pub obytes: u64,
    pub imissed: u64,
    pub ierrors: u64,
    pub oerrors: u64,
    pub rx_nombuf: u64,
}

impl PortStats {
    /// Counter-wise difference (saturating: a driver may reset its counters).
    pub fn since(&self, base: &PortStats) -> PortStats {
        PortStats {
            ipackets: self.ipackets.saturating_sub(base.ipackets),
            opackets: self.opackets.saturating_sub(base.opackets),
            ibytes: self.ibytes.saturating_sub(base.ibytes),
            obytes: self.obytes.saturating_sub(base.obytes),
            imissed: self.imissed.saturating_sub(base.imissed),
            ierrors: self.ierrors.saturating_sub(base.ierrors),
            oerrors: self.oerrors.saturating_sub(base.oerrors),
            rx_nombuf: self.rx_nombuf.saturating_sub(base.rx_nombuf),
        }
    }
}

/// Link state as reported without waiting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkStatus {
    pub up: bool,
    pub speed_mbps: u32,
    pub full_duplex: bool,
}

/// What `show port info` prints.
#[derive(Clone, Debug)]
pub struct PortInfo {
    pub id: u16,
    pub name: String,
    pub driver: String,
    pub mac: [u8; 6],
    pub socket: i32,
    pub max_rx_queues: u16,
    pub max_tx_queues: u16,
    pub rx_queues: u16,
    pub tx_queues: u16,
    pub mtu: u16,
    pub link: LinkStatus,
    pub promiscuous: bool,
    /// The device verifies received IPv4 header checksums (offload on).
    pub rx_ip_checksum: bool,
}

/// An ethdev port. `stop`/`close` run on drop in that order; drop ports only
/// after every worker using their queues has returned.
pub struct Port {
    id: u16,
    name: String,
    queues: u16,
    started: bool,
    closed: bool,
}

impl Port {
    /// Finds the port of a DPDK device by its name.
    pub fn by_name(name: &str) -> Result<Port, DpdkError> {
        let cname = CString::new(name).map_err(|_| DpdkError::new("port name with NUL", 22))?;
        let mut id = 0u16;
        // SAFETY: cname is valid; id is a valid out-pointer.
        let ret = unsafe { dpdk_sys::rte_eth_dev_get_port_by_name(cname.as_ptr(), &mut id) };
        if ret < 0 {
            return Err(DpdkError::new(
                format!("no DPDK port named '{name}' (known: {})", Port::names().join(", ")),
                19, // ENODEV
            ));
        }
        Ok(Port {
            id,
            name: name.to_string(),
            queues: 0,
            started: false,
            closed: false,
        })
    }

    /// The port with ethdev id `id` (as returned by a DPDK constructor).
    pub(crate) fn from_id(id: u16) -> Port {
        Port {
            id,
            name: port_name(id),
            queues: 0,
            started: false,
            closed: false,
        }
    }

    /// Names of every port EAL probed.
    pub fn names() -> Vec<String> {
        let mut out = Vec::new();
        // SAFETY: walks the ethdev table; RTE_MAX_ETHPORTS bounds the ids.
        unsafe {
            let mut id = dpdk_sys::rte_eth_find_next(0);
            while (id as u32) < dpdk_sys::RTE_MAX_ETHPORTS {
                out.push(port_name(id));
                id = dpdk_sys::rte_eth_find_next(id + 1);
            }
        }
        out
    }

    pub fn id(&self) -> u16 {
        self.id
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn queues(&self) -> u16 {
        self.queues
    }

    /// Whether the device verifies received IPv4 header checksums (its
    /// mbufs then say GOOD or BAD), as configured.
    pub fn rx_ip_checksum(&self) -> bool {
        rx_ip_checksum_on(self.id)
    }

    /// Configures `conf.queues` RX and TX queues (RSS over IPv4/TCP/UDP when
    /// more than one) and sets up each RX queue with `pool`.
    pub fn configure(&mut self, conf: &PortConfig, pool: &Mempool) -> Result<(), DpdkError> {
        let info = self.raw_info()?;
        if conf.queues == 0 || conf.queues > info.max_rx_queues || conf.queues > info.max_tx_queues {
            return Err(DpdkError::new(
                format!(
                    "port {}: {} queues requested, device supports rx {} tx {}",
                    self.name, conf.queues, info.max_rx_queues, info.max_tx_queues
                ),
                22,
            ));
        }
        // SAFETY: rte_eth_conf is a plain C struct for which all-zero is the
        // documented default configuration.
        let mut eth_conf: dpdk_sys::rte_eth_conf = unsafe { std::mem::zeroed() };
        if conf.queues > 1 {
            let hf = (rss::IPV4 | rss::NONFRAG_IPV4_TCP | rss::NONFRAG_IPV4_UDP) & info.flow_type_rss_offloads;
            if hf != 0 {
                eth_conf.rxmode.mq_mode = dpdk_sys::RTE_ETH_MQ_RX_RSS;
                eth_conf.rx_adv_conf.rss_conf.rss_hf = hf;
            }
        }
        // A NIC that verifies IPv4 header checksums saves the router that
        // work; the flag it sets travels in the replica, so a backup
        // skips it for the same packets.
        if conf.rx_ip_checksum && info.rx_offload_capa & rx_offload::IPV4_CKSUM != 0 {
            eth_conf.rxmode.offloads |= rx_offload::IPV4_CKSUM;
        }
        // SAFETY: port id is valid; eth_conf lives across the call.
        let ret = unsafe { dpdk_sys::rte_eth_dev_configure(self.id, conf.queues, conf.queues, &eth_conf) };
        DpdkError::check(&format!("rte_eth_dev_configure({})", self.name), ret)?;

        let (mut rxd, mut txd) = (conf.rx_desc, conf.tx_desc);
        // SAFETY: port id is valid; both pointers are valid for the call.
        let ret = unsafe { dpdk_sys::rte_eth_dev_adjust_nb_rx_tx_desc(self.id, &mut rxd, &mut txd) };
        DpdkError::check(&format!("rte_eth_dev_adjust_nb_rx_tx_desc({})", self.name), ret)?;

        // SAFETY: port id is valid.
        let socket = unsafe { dpdk_sys::rte_eth_dev_socket_id(self.id) };
        let socket = if socket < 0 { 0 } else { socket as u32 };
        for q in 0..conf.queues {
            // SAFETY: the port is configured with conf.queues queues; NULL
            // rx/tx conf selects the driver's defaults; the pool outlives the
            // port (callers drop ports first).
            let ret =
                unsafe { dpdk_sys::rte_eth_rx_queue_setup(self.id, q, rxd, socket, std::ptr::null(), pool.as_ptr()) };
            DpdkError::check(&format!("rte_eth_rx_queue_setup({}, {q})", self.name), ret)?;
            // SAFETY: as above. The default txconf leaves MBUF_FAST_FREE off,
            // which the replication path requires (refcounted, multi-pool).
            let ret = unsafe { dpdk_sys::rte_eth_tx_queue_setup(self.id, q, txd, socket, std::ptr::null()) };
            DpdkError::check(&format!("rte_eth_tx_queue_setup({}, {q})", self.name), ret)?;
        }
        if conf.promiscuous {
            // SAFETY: port id is valid. Some vdevs cannot do it; not fatal.
            let ret = unsafe { dpdk_sys::rte_eth_promiscuous_enable(self.id) };
            if ret < 0 {
                log::warn!("port {}: promiscuous mode: {}", self.name, DpdkError::new("", -ret));
            }
        }
        self.queues = conf.queues;
        Ok(())
    }

    /// [`Port::configure`] with `conf` over `pool`, then [`Port::start`].
    pub fn configure_and_start(&mut self, conf: &PortConfig, pool: &Mempool) -> Result<(), DpdkError> {
        self.configure(conf, pool)?;
        self.start()
    }

    pub fn start(&mut self) -> Result<(), DpdkError> {
        // SAFETY: port id is valid and configured.
        let ret = unsafe { dpdk_sys::rte_eth_dev_start(self.id) };
        DpdkError::check(&format!("rte_eth_dev_start({})", self.name), ret)?;
        self.started = true;
        Ok(())
    }

    pub fn stop(&mut self) -> Result<(), DpdkError> {
        if !self.started {
            return Ok(());
        }
        self.started = false;
        // SAFETY: port id is valid; callers stop workers first.
        let ret = unsafe { dpdk_sys::rte_eth_dev_stop(self.id) };
        DpdkError::check(&format!("rte_eth_dev_stop({})", self.name), ret).map(|_| ())
    }

    pub fn close(&mut self) -> Result<(), DpdkError> {
        self.stop()?;
        if self.closed {
            return Ok(());
        }
        self.closed = true;
        // SAFETY: port id is valid and stopped.
        let ret = unsafe { dpdk_sys::rte_eth_dev_close(self.id) };
        DpdkError::check(&format!("rte_eth_dev_close({})", self.name), ret).map(|_| ())
    }

    /// Sets the MTU (the PMD may pass it on to the kernel interface).
    pub fn set_mtu(&self, mtu: u16) -> Result<(), DpdkError> {
        // SAFETY: port id is valid.
        let ret = unsafe { dpdk_sys::rte_eth_dev_set_mtu(self.id, mtu) };
        DpdkError::check(&format!("rte_eth_dev_set_mtu({}, {mtu})", self.name), ret).map(|_| ())
    }

    pub fn stats(&self) -> Result<PortStats, DpdkError> {
        port_stats(self.id)
    }

    pub fn link(&self) -> LinkStatus {
        port_link(self.id)
    }

    pub fn mac(&self) -> [u8; 6] {
        port_mac(self.id)
    }

    pub fn info(&self) -> Result<PortInfo, DpdkError> {
        port_info(self.id)
    }

    fn raw_info(&self) -> Result<dpdk_sys::rte_eth_dev_info, DpdkError> {
        raw_info(self.id)
    }

    /// Handle on RX queue `q`, for the worker that owns it.
    pub fn rx_queue(&self, q: u16) -> RxQueue {
        RxQueue {
            port: self.id,
            queue: q,
        }
    }

    /// Handle on TX queue `q`, for the worker that owns it.
    pub fn tx_queue(&self, q: u16) -> TxQueue {
        TxQueue {
            port: self.id,
            queue: q,
        }
    }
}

impl Drop for Port {
    fn drop(&mut self) {
        if let Err(e) = self.close() {
            log::warn!("{e}");
        }
    }
}

fn raw_info(id: u16) -> Result<dpdk_sys::rte_eth_dev_info, DpdkError> {
    // SAFETY: an all-zero rte_eth_dev_info is a valid out-buffer.
    let mut info: dpdk_sys::rte_eth_dev_info = unsafe { std::mem::zeroed() };
    // SAFETY: id names a probed port; info is a valid out-pointer.
    let ret = unsafe { dpdk_sys::rte_eth_dev_info_get(id, &mut info) };
    DpdkError::check("rte_eth_dev_info_get", ret)?;
    Ok(info)
}

fn port_name(id: u16) -> String {
    let mut buf = [0 as c_char; dpdk_sys::RTE_ETH_NAME_MAX_LEN as usize];
    // SAFETY: buf is RTE_ETH_NAME_MAX_LEN long, as the API requires.
    let ret = unsafe { dpdk_sys::rte_eth_dev_get_name_by_port(id, buf.as_mut_ptr()) };
    if ret < 0 {
        return format!("port{id}");
    }
    // SAFETY: DPDK wrote a NUL-terminated name into buf.
    unsafe { CStr::from_ptr(buf.as_ptr()) }.to_string_lossy().into_owned()
}

/// Driver counters of port `id` (callable from any thread).
pub fn port_stats(id: u16) -> Result<PortStats, DpdkError> {
    // SAFETY: an all-zero rte_eth_stats is a valid out-buffer.
    let mut s: dpdk_sys::rte_eth_stats = unsafe { std::mem::zeroed() };
    // SAFETY: id names a probed port; s is a valid out-pointer.
    let ret = unsafe { dpdk_sys::rte_eth_stats_get(id, &mut s) };
    DpdkError::check("rte_eth_stats_get", ret)?;
    Ok(PortStats {
        ipackets: s.ipackets,
        opackets: s.opackets,
        ibytes: s.ibytes,
        obytes: s.obytes,
        imissed: s.imissed,
        ierrors: s.ierrors,
        oerrors: s.oerrors,
        rx_nombuf: s.rx_nombuf,
    })
}

/// Zeroes the driver counters of port `id`.
pub fn port_stats_reset(id: u16) -> Result<(), DpdkError> {
    // SAFETY: id names a probed port.
    let ret = unsafe { dpdk_sys::rte_eth_stats_reset(id) };
    DpdkError::check("rte_eth_stats_reset", ret).map(|_| ())
}

/// Link status of port `id`, without waiting.
pub fn port_link(id: u16) -> LinkStatus {
    // SAFETY: an all-zero rte_eth_link is a valid out-buffer.
    let mut l: dpdk_sys::rte_eth_link = unsafe { std::mem::zeroed() };
    // SAFETY: id names a probed port; l is a valid out-pointer.
    let ret = unsafe { dpdk_sys::rte_eth_link_get_nowait(id, &mut l) };
    if ret < 0 {
        return LinkStatus {
            up: false,
            speed_mbps: 0,
            full_duplex: false,
        };
    }
    LinkStatus {
        up: l.link_status() != 0,
        speed_mbps: l.link_speed,
        full_duplex: l.link_duplex() != 0,
    }
}

/// MAC address of port `id`.
pub fn port_mac(id: u16) -> [u8; 6] {
    let mut a = dpdk_sys::rte_ether_addr::default();
    // SAFETY: id names a probed port; a is a valid out-pointer.
    unsafe { dpdk_sys::rte_eth_macaddr_get(id, &mut a) };
    a.addr_bytes
}

/// Everything `show port info` prints about port `id`.
pub fn port_info(id: u16) -> Result<PortInfo, DpdkError> {
    let info = raw_info(id)?;
    let driver = if info.driver_name.is_null() {
        String::new()
    } else {
        // SAFETY: DPDK's driver names are static NUL-terminated strings.
        unsafe { CStr::from_ptr(info.driver_name) }
            .to_string_lossy()
            .into_owned()
    };
    let mut mtu = 0u16;
    // SAFETY: id is valid; mtu is a valid out-pointer.
    unsafe { dpdk_sys::rte_eth_dev_get_mtu(id, &mut mtu) };
    // SAFETY: id is valid.
    let socket = unsafe { dpdk_sys::rte_eth_dev_socket_id(id) };
    // SAFETY: id is valid.
    let promiscuous = unsafe { dpdk_sys::rte_eth_promiscuous_get(id) } == 1;
    Ok(PortInfo {
        id,
        name: port_name(id),
        driver,
        mac: port_mac(id),
        socket,
        max_rx_queues: info.max_rx_queues,
        max_tx_queues: info.max_tx_queues,
        rx_queues: info.nb_rx_queues,
        tx_queues: info.nb_tx_queues,
        mtu,
        link: port_link(id),
        promiscuous,
        rx_ip_checksum: rx_ip_checksum_on(id),
    })
}

/// Whether port `id` was configured with IPv4 header checksums verified
/// on receive (what the device was asked for and could do; false before
/// it is configured).
fn rx_ip_checksum_on(id: u16) -> bool {
    // SAFETY: rte_eth_conf is a plain C struct, all-zero valid.
    let mut conf: dpdk_sys::rte_eth_conf = unsafe { std::mem::zeroed() };
    // SAFETY: id is valid; conf is a valid out-pointer.
    let got = unsafe { dpdk_sys::rte_eth_dev_conf_get(id, &mut conf) } == 0;
    got && conf.rxmode.offloads & rx_offload::IPV4_CKSUM != 0
}

/// RX queue `queue` of a port. Exactly one worker polls it.
#[derive(Clone, Copy, Debug)]
pub struct RxQueue {
    pub port: u16,
    pub queue: u16,
}

/// TX queue `queue` of a port. Exactly one worker sends on it.
#[derive(Clone, Copy, Debug)]
pub struct TxQueue {
    pub port: u16,
    pub queue: u16,
}

/// Up to `N` received packets, owned: the ones not taken are freed on drop.
pub struct RxBurst<const N: usize> {
    pkts: [*mut dpdk_sys::rte_mbuf; N],
    len: usize,
    next: usize,
}

impl<const N: usize> Default for RxBurst<N> {
    fn default() -> Self {
        RxBurst {
            pkts: [std::ptr::null_mut(); N],
            len: 0,
            next: 0,
        }
    }
}

impl<const N: usize> RxBurst<N> {
    pub fn len(&self) -> usize {
        self.len - self.next
    }

    pub fn is_empty(&self) -> bool {
        self.len == self.next
    }

    /// Frees whatever is left.
    pub fn clear(&mut self) {
        while self.pop().is_some() {}
    }

    /// The next packet of the burst, in arrival order.
    #[inline]
    pub fn pop(&mut self) -> Option<Mbuf> {
        if self.next == self.len {
            self.next = 0;
            self.len = 0;
            return None;
        }
        let p = self.pkts[self.next];
        self.next += 1;
        // SAFETY: slots [next, len) hold mbufs the driver handed to us and
        // nobody else has taken.
        unsafe { Mbuf::from_raw(p) }
    }
}

impl<const N: usize> RxBurst<N> {
    /// The packets left, in arrival order.
    #[inline]
    pub fn as_slice(&self) -> &[Mbuf] {
        let left = &self.pkts[self.next..self.len];
        // SAFETY: Mbuf is a transparent wrapper of a non-null mbuf pointer,
        // and slots [next, len) hold valid mbufs this burst owns; the slice
        // borrows the burst, so none is taken or freed meanwhile.
        unsafe { std::slice::from_raw_parts(left.as_ptr() as *const Mbuf, left.len()) }
    }

    /// Moves every packet left, in arrival order, onto the end of `into`.
    #[inline]
    pub fn drain_into(&mut self, into: &mut Vec<Mbuf>) {
        let n = self.len - self.next;
        into.reserve(n);
        // SAFETY: slots [next, len) hold valid (non-null) mbufs the driver
        // handed to us and nobody else has taken; Mbuf is a transparent
        // wrapper of such a pointer, so they move into the vector's spare
        // capacity (reserved above) in one copy, and the burst forgets them.
        unsafe {
            let dst = into.as_mut_ptr().add(into.len()) as *mut *mut dpdk_sys::rte_mbuf;
            std::ptr::copy_nonoverlapping(self.pkts.as_ptr().add(self.next), dst, n);
            into.set_len(into.len() + n);
        }
        self.next = 0;
        self.len = 0;
    }
}

impl<const N: usize> Drop for RxBurst<N> {
    fn drop(&mut self) {
        self.clear();
    }
}

impl RxQueue {
    /// Receives up to `N` packets into an empty `burst`; returns how many.
    /// Packets still in `burst` are freed first (nothing leaks).
    #[inline]
    pub fn rx_burst<const N: usize>(&mut self, burst: &mut RxBurst<N>) -> usize {
        self.rx_burst_n(burst, N)
    }

    /// Like [`RxQueue::rx_burst`], asking for at most `max` (<= N) packets.
    #[inline]
    pub fn rx_burst_n<const N: usize>(&mut self, burst: &mut RxBurst<N>, max: usize) -> usize {
        burst.clear();
        // SAFETY: the queue is set up and polled only by this worker; pkts
        // has room for N pointers.
        let n =
            unsafe { dpdk_sys::rte_eth_rx_burst(self.port, self.queue, burst.pkts.as_mut_ptr(), max.min(N) as u16) };
        burst.len = n as usize;
        burst.next = 0;
        n as usize
    }
}

/// Packets waiting to be sent, owned until handed to the driver.
pub struct TxBatch<const N: usize> {
    pkts: [*mut dpdk_sys::rte_mbuf; N],
    len: usize,
}

impl<const N: usize> Default for TxBatch<N> {
    fn default() -> Self {
        TxBatch {
            pkts: [std::ptr::null_mut(); N],
            len: 0,
        }
    }
}

impl<const N: usize> TxBatch<N> {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn is_full(&self) -> bool {
        self.len == N
    }

    /// Queues a packet. A full batch hands it back.
    #[inline]
    pub fn push(&mut self, m: Mbuf) -> Result<(), Mbuf> {
        if self.len == N {
            return Err(m);
        }
        self.pkts[self.len] = m.into_raw();
        self.len += 1;
        Ok(())
    }

    /// Frees every queued packet; returns how many.
    pub fn clear(&mut self) -> usize {
        let n = self.len;
        for p in &self.pkts[..n] {
            // SAFETY: queued slots own their mbufs.
            drop(unsafe { Mbuf::from_raw(*p) });
        }
        self.len = 0;
        n
    }

    /// Moves as many packets of `from` as fit, in order, from its front;
    /// returns how many moved (the rest stay in `from`).
    #[inline]
    pub fn append_vec(&mut self, from: &mut Vec<Mbuf>) -> usize {
        let n = from.len().min(N - self.len);
        let rest = from.len() - n;
        // SAFETY: Mbuf is a transparent wrapper of an mbuf pointer: the
        // first `n` of `from` move, as raw pointers, into free slots
        // [len, len + n); the rest slide to the front; the vector's length
        // then counts only those, so none is dropped or owned twice.
        unsafe {
            let src = from.as_mut_ptr();
            std::ptr::copy_nonoverlapping(
                src as *const *mut dpdk_sys::rte_mbuf,
                self.pkts.as_mut_ptr().add(self.len),
                n,
            );
            std::ptr::copy(src.add(n), src, rest);
            from.set_len(rest);
        }
        self.len += n;
        n
    }
}

impl<const N: usize> Drop for TxBatch<N> {
    fn drop(&mut self) {
        self.clear();
    }
}

/// Outcome of one [`TxQueue::tx_burst`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TxOutcome {
    /// Packets the driver accepted.
    pub sent: usize,
    /// Packets it refused: freed here, to be counted by the caller.
    pub refused: usize,
}

impl TxQueue {
    /// Hands the whole batch to the driver. What the driver refuses is freed
    /// at once, so the batch is always empty afterwards.
    #[inline]
    pub fn tx_burst<const N: usize>(&mut self, batch: &mut TxBatch<N>) -> TxOutcome {
        let sent = self.tx_prefix(batch, batch.len());
        let refused = batch.clear();
        TxOutcome { sent, refused }
    }

    /// Sends one packet now (a marker, an ACK); whether the driver took it.
    /// A refused one is freed.
    pub fn send_one(&mut self, m: Mbuf) -> bool {
        let mut b = TxBatch::<1>::default();
        let _ = b.push(m);
        self.tx_burst(&mut b).sent == 1
    }

    /// Hands the first `n` packets of the batch to the driver and returns how
    /// many it accepted; those leave the batch, the rest (refused or beyond
    /// `n`) stay in it, in order.
    #[inline]
    pub fn tx_prefix<const N: usize>(&mut self, batch: &mut TxBatch<N>, n: usize) -> usize {
        let n = n.min(batch.len);
        if n == 0 {
            return 0;
        }
        // SAFETY: the queue is used only by this worker; the first n slots
        // hold mbufs we own; the driver takes ownership of the first `sent`.
        let sent =
            unsafe { dpdk_sys::rte_eth_tx_burst(self.port, self.queue, batch.pkts.as_mut_ptr(), n as u16) } as usize;
        batch.pkts.copy_within(sent..batch.len, 0);
        batch.len -= sent;
        sent
    }
}
