//! An owned packet buffer. Dropping an [`Mbuf`] frees it (the whole chain);
//! handing it to a TX queue transfers ownership to the driver.

use std::ptr::NonNull;

use super::mempool::Mempool;
use crate::frame::Frame;

/// Most mbufs [`Mbuf::alloc_bulk`] takes in one call.
pub const MAX_BULK: usize = 64;

/// Fresh mbufs taken from a pool several at a time: one trip to the pool's
/// per-lcore cache per refill instead of one per mbuf, for a path that
/// allocates an mbuf per packet or per frame.
pub struct MbufStash {
    mbufs: Vec<Mbuf>,
    refill: usize,
}

impl MbufStash {
    /// A stash refilled `refill` (at most [`MAX_BULK`]) at a time.
    pub fn new(refill: usize) -> MbufStash {
        let refill = refill.clamp(1, MAX_BULK);
        MbufStash {
            mbufs: Vec::with_capacity(refill),
            refill,
        }
    }

    /// A fresh mbuf of `pool` (one by one when the pool runs that low).
    /// One stash serves one pool.
    #[inline]
    pub fn take(&mut self, pool: &Mempool) -> Option<Mbuf> {
        if self.mbufs.is_empty() && !Mbuf::alloc_bulk(pool, &mut self.mbufs, self.refill) {
            return Mbuf::alloc(pool);
        }
        self.mbufs.pop()
    }
}

/// One packet (possibly a chain of segments) owned by Rust code.
#[repr(transparent)]
pub struct Mbuf {
    raw: NonNull<dpdk_sys::rte_mbuf>,
}

// SAFETY: an mbuf is a plain buffer owned by exactly one holder at a time;
// moving it between lcores is how DPDK applications pass packets around.
unsafe impl Send for Mbuf {}

impl Mbuf {
    /// Takes a fresh mbuf from `pool`, or `None` when the pool is empty.
    #[inline]
    pub fn alloc(pool: &Mempool) -> Option<Mbuf> {
        // SAFETY: the pool is valid; a non-NULL result is an mbuf we now own.
        let raw = unsafe { dpdk_sys::rte_pktmbuf_alloc(pool.as_ptr()) };
        NonNull::new(raw).map(|raw| Mbuf { raw })
    }

    /// Takes `n` fresh mbufs from `pool` in one call onto the end of `into`
    /// (the per-lcore cache is reached once instead of `n` times); false,
    /// taking none, when the pool has fewer than `n`.
    pub fn alloc_bulk(pool: &Mempool, into: &mut Vec<Mbuf>, n: usize) -> bool {
        let mut raw: [*mut dpdk_sys::rte_mbuf; MAX_BULK] = [std::ptr::null_mut(); MAX_BULK];
        let n = n.min(MAX_BULK);
        // SAFETY: the pool is valid and `raw` has room for `n` pointers; on
        // success each of them is an mbuf we now own, on failure none is.
        let rc = unsafe { dpdk_sys::rte_pktmbuf_alloc_bulk(pool.as_ptr(), raw.as_mut_ptr(), n as u32) };
        if rc != 0 {
            return false;
        }
        into.extend(raw[..n].iter().filter_map(|p| NonNull::new(*p)).map(|raw| Mbuf { raw }));
        true
    }

    /// Frees every mbuf of `mbufs` (whole chains) in one call, leaving it
    /// empty with its capacity.
    pub fn free_bulk(mbufs: &mut Vec<Mbuf>) {
        let n = mbufs.len();
        if n == 0 {
            return;
        }
        // SAFETY: Mbuf is a transparent wrapper of a non-null mbuf pointer,
        // so the vector is an array of `n` mbuf pointers we own; DPDK frees
        // each exactly once; the length is then set to 0 so none is freed or
        // used again through the vector.
        unsafe {
            dpdk_sys::rte_pktmbuf_free_bulk(mbufs.as_mut_ptr() as *mut *mut dpdk_sys::rte_mbuf, n as u32);
            mbufs.set_len(0);
        }
    }

    /// Asks the CPU for every cache line of the first segment's data (a
    /// whole replication batch before it is parsed: the lines come in while
    /// the frame before it is processed).
    #[inline]
    pub fn prefetch_data(&self) {
        let d = self.data();
        for line in d.chunks(64) {
            super::prefetch(&line[0]);
        }
    }

    /// Adopts a raw mbuf.
    ///
    /// # Safety
    /// `raw` must be a valid mbuf that the caller owns and gives up.
    #[inline]
    pub unsafe fn from_raw(raw: *mut dpdk_sys::rte_mbuf) -> Option<Mbuf> {
        NonNull::new(raw).map(|raw| Mbuf { raw })
    }

    /// Gives up ownership without freeing.
    #[inline]
    pub fn into_raw(self) -> *mut dpdk_sys::rte_mbuf {
        let p = self.raw.as_ptr();
        std::mem::forget(self);
        p
    }

    #[inline]
    pub fn as_ptr(&self) -> *mut dpdk_sys::rte_mbuf {
        self.raw.as_ptr()
    }

    #[inline]
    fn m(&self) -> &dpdk_sys::rte_mbuf {
        // SAFETY: we own a valid mbuf for self's lifetime.
        unsafe { self.raw.as_ref() }
    }

    #[inline]
    fn m_mut(&mut self) -> &mut dpdk_sys::rte_mbuf {
        // SAFETY: we own a valid mbuf and hold &mut self.
        unsafe { self.raw.as_mut() }
    }

    /// Bytes in the first segment.
    #[inline]
    pub fn data_len(&self) -> usize {
        self.m().data_len as usize
    }

    /// Bytes in the whole chain.
    #[inline]
    pub fn pkt_len(&self) -> usize {
        self.m().pkt_len as usize
    }

    #[inline]
    pub fn nb_segs(&self) -> u16 {
        self.m().nb_segs
    }

    /// The DPDK port the packet was received on.
    #[inline]
    pub fn port(&self) -> u16 {
        self.m().port
    }

    /// Overwrites the port field. No PMD reads it on transmit, so between
    /// lcores it can carry what the sender wants the receiver to know.
    #[inline]
    pub fn set_port(&mut self, port: u16) {
        self.m_mut().port = port;
    }

    /// A one-segment copy of this mbuf's first segment, from `pool`.
    pub fn copy_from(&self, pool: &Mempool) -> Option<Mbuf> {
        let mut c = Mbuf::alloc(pool)?;
        c.extend(self.data_len())?.copy_from_slice(self.data());
        c.set_port(self.port());
        Some(c)
    }

    /// The first segment's bytes.
    #[inline]
    pub fn data(&self) -> &[u8] {
        let m = self.m();
        // SAFETY: buf_addr + data_off .. + data_len lies inside the mbuf's
        // buffer, which lives as long as we own the mbuf.
        unsafe { std::slice::from_raw_parts((m.buf_addr as *const u8).add(m.data_off as usize), m.data_len as usize) }
    }

    /// The first segment's bytes, writable. For an mbuf whose buffer is
    /// shared (refcount > 1, or indirect), writes are seen by every sharer:
    /// the replication path relies on that being confined to the rewrite span.
    #[inline]
    pub fn data_mut(&mut self) -> &mut [u8] {
        let m = self.m_mut();
        // SAFETY: as in `data`, and &mut self makes this the only live view.
        unsafe { std::slice::from_raw_parts_mut((m.buf_addr as *mut u8).add(m.data_off as usize), m.data_len as usize) }
    }

    /// A view of the first segment that can grow into headroom and tailroom.
    /// The mbuf's offsets follow the frame's when the view is dropped.
    #[inline]
    pub fn frame(&mut self) -> MbufFrame<'_> {
        let m = self.m_mut();
        let head = m.data_off as usize;
        let len = m.data_len as usize;
        let cap = m.buf_len as usize;
        // SAFETY: buf_addr .. buf_addr + buf_len is the mbuf's whole buffer,
        // owned by us while the view borrows self mutably.
        let buf = unsafe { std::slice::from_raw_parts_mut(m.buf_addr as *mut u8, cap) };
        MbufFrame {
            // DPDK keeps data_off + data_len <= buf_len for every mbuf.
            frame: Frame::new_in_range(buf, head, len),
            raw: self.raw,
            head,
            len,
        }
    }

    /// Appends `n` bytes at the tail of the last segment.
    #[inline]
    pub fn append(&mut self, n: u16) -> Option<&mut [u8]> {
        // SAFETY: we own the mbuf; DPDK returns NULL if there is no room.
        let p = unsafe { dpdk_sys::rte_pktmbuf_append(self.raw.as_ptr(), n) };
        if p.is_null() {
            return None;
        }
        // SAFETY: DPDK just reserved n bytes at p inside the buffer.
        Some(unsafe { std::slice::from_raw_parts_mut(p as *mut u8, n as usize) })
    }

    /// Copies the first segment's bytes to the front of `dst` and returns
    /// how many; `None` (nothing copied) when `dst` is shorter. When both
    /// this buffer and `dst` have room past the data, it copies whole
    /// 64-byte blocks, and `dst` then holds stale bytes after the data that
    /// the caller overwrites or cuts off: a small packet becomes a few
    /// vector moves instead of a call into `memcpy` (the replication path
    /// copies every small packet).
    #[inline]
    pub fn copy_data_to(&self, dst: &mut [u8]) -> Option<usize> {
        let m = self.m();
        let len = m.data_len as usize;
        let padded = (len + 63) & !63;
        if padded <= dst.len() && m.data_off as usize + padded <= m.buf_len as usize {
            // SAFETY: [data_off, data_off + padded) lies inside the buffer
            // (checked against buf_len), which we hold for self's lifetime;
            // `dst` has `padded` bytes. `copy`, not `copy_nonoverlapping`:
            // `dst` could be the data of an indirect clone of this buffer.
            unsafe {
                let src = (m.buf_addr as *const u8).add(m.data_off as usize);
                for i in (0..padded).step_by(64) {
                    std::ptr::copy(src.add(i), dst.as_mut_ptr().add(i), 64);
                }
            }
        } else {
            dst.get_mut(..len)?.copy_from_slice(self.data());
        }
        Some(len)
    }

    /// Bytes free after the first segment's data.
    #[inline]
    pub fn tailroom(&self) -> usize {
        let m = self.m();
        (m.buf_len as usize).saturating_sub(m.data_off as usize + m.data_len as usize)
    }

    /// Extends a single-segment mbuf by `n` bytes at its tail, without a
    /// call into DPDK (the replication path does this for every packet).
    #[inline]
    pub fn extend(&mut self, n: usize) -> Option<&mut [u8]> {
        let m = self.m_mut();
        if !m.next.is_null() {
            return None;
        }
        let off = m.data_off as usize + m.data_len as usize;
        if off + n > m.buf_len as usize {
            return None;
        }
        m.data_len += n as u16;
        m.pkt_len += n as u32;
        // SAFETY: [off, off + n) lies inside the buffer (checked against
        // buf_len above) and belongs to this mbuf's data now.
        Some(unsafe { std::slice::from_raw_parts_mut((m.buf_addr as *mut u8).add(off), n) })
    }

    /// Prepends `n` bytes into the headroom.
    #[inline]
    pub fn prepend(&mut self, n: u16) -> Option<&mut [u8]> {
        // SAFETY: we own the mbuf; DPDK returns NULL if there is no headroom.
        let p = unsafe { dpdk_sys::rte_pktmbuf_prepend(self.raw.as_ptr(), n) };
        if p.is_null() {
            return None;
        }
        // SAFETY: DPDK just reserved n bytes at p inside the buffer.
        Some(unsafe { std::slice::from_raw_parts_mut(p as *mut u8, n as usize) })
    }

    /// Removes `n` bytes from the front of the first segment.
    #[inline]
    pub fn adj(&mut self, n: u16) -> bool {
        // SAFETY: we own the mbuf; DPDK refuses if n > data_len.
        !unsafe { dpdk_sys::rte_pktmbuf_adj(self.raw.as_ptr(), n) }.is_null()
    }

    /// Removes `n` bytes from the end of the last segment.
    #[inline]
    pub fn trim(&mut self, n: u16) -> bool {
        // SAFETY: we own the mbuf; DPDK refuses if n > the last data_len.
        unsafe { dpdk_sys::rte_pktmbuf_trim(self.raw.as_ptr(), n) == 0 }
    }

    /// Reference count of the buffer this mbuf's data lives in (for an
    /// indirect mbuf: the direct mbuf it is attached to).
    #[inline]
    pub fn buffer_refcnt(&self) -> u16 {
        let direct = self.direct_ptr();
        // SAFETY: direct is the valid mbuf that owns the data buffer.
        unsafe { dpdk_sys::rte_mbuf_refcnt_read(direct) }
    }

    /// Whether the receiving device verified the IPv4 header checksum and
    /// found it good (its RX offload on; every other case, bad, unknown or
    /// not checked, is false).
    #[inline]
    pub fn rx_ip_checksum_good(&self) -> bool {
        self.m().ol_flags & dpdk_sys::RTE_MBUF_F_RX_IP_CKSUM_MASK as u64 == dpdk_sys::RTE_MBUF_F_RX_IP_CKSUM_GOOD as u64
    }

    /// Sets the RX IPv4 checksum flags as a device with the offload would
    /// (good or bad).
    #[inline]
    pub fn set_rx_ip_checksum(&mut self, good: bool) {
        let flag = if good {
            dpdk_sys::RTE_MBUF_F_RX_IP_CKSUM_GOOD
        } else {
            dpdk_sys::RTE_MBUF_F_RX_IP_CKSUM_BAD
        };
        let m = self.m_mut();
        m.ol_flags = m.ol_flags & !(dpdk_sys::RTE_MBUF_F_RX_IP_CKSUM_MASK as u64) | flag as u64;
    }

    /// Whether this mbuf points into another mbuf's buffer.
    #[inline]
    pub fn is_indirect(&self) -> bool {
        self.m().ol_flags & dpdk_sys::RTE_MBUF_F_INDIRECT != 0
    }

    /// Start of the data buffer (equal for mbufs that share it).
    #[inline]
    pub fn buf_addr(&self) -> *const u8 {
        self.m().buf_addr as *const u8
    }

    fn direct_ptr(&self) -> *mut dpdk_sys::rte_mbuf {
        if self.is_indirect() {
            // SAFETY: an indirect mbuf's buf_addr points into its direct
            // mbuf's buffer; rte_mbuf_from_indirect recovers that mbuf.
            unsafe { dpdk_sys::rte_mbuf_from_indirect(self.raw.as_ptr()) }
        } else {
            self.raw.as_ptr()
        }
    }

    /// An indirect clone (from `pool`) sharing this packet's buffer: no byte
    /// is copied, the buffer's refcount goes up by one.
    #[inline]
    pub fn clone_indirect(&self, pool: &Mempool) -> Option<Mbuf> {
        // SAFETY: self is a valid mbuf; the clone, if any, is ours.
        let raw = unsafe { dpdk_sys::rte_pktmbuf_clone(self.raw.as_ptr(), pool.as_ptr()) };
        NonNull::new(raw).map(|raw| Mbuf { raw })
    }

    /// Chains `tail` after this packet's last segment. On failure (too many
    /// segments) both are handed back.
    #[inline]
    pub fn chain(self, tail: Mbuf) -> Result<Mbuf, (Mbuf, Mbuf)> {
        // SAFETY: both are valid, distinct mbufs we own; on success DPDK
        // links tail into head and ownership of tail moves into the chain.
        let ret = unsafe { dpdk_sys::rte_pktmbuf_chain(self.raw.as_ptr(), tail.raw.as_ptr()) };
        if ret == 0 {
            std::mem::forget(tail);
            Ok(self)
        } else {
            Err((self, tail))
        }
    }

    /// Copies the whole chain's bytes into `out` (for tests and slow paths).
    pub fn copy_to_vec(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.pkt_len());
        let mut seg = self.raw.as_ptr();
        while !seg.is_null() {
            // SAFETY: seg walks the chain we own; each segment's data range is
            // inside its buffer.
            unsafe {
                let m = &*seg;
                out.extend_from_slice(std::slice::from_raw_parts(
                    (m.buf_addr as *const u8).add(m.data_off as usize),
                    m.data_len as usize,
                ));
                seg = m.next;
            }
        }
        out
    }

    /// Buffer address of the second segment (to check sharing in tests).
    pub fn next_segment_buf_addr(&self) -> Option<*const u8> {
        let next = self.m().next;
        // SAFETY: next, if non-NULL, is a segment of the chain we own.
        (!next.is_null()).then(|| unsafe { (*next).buf_addr as *const u8 })
    }
}

impl Drop for Mbuf {
    #[inline]
    fn drop(&mut self) {
        // SAFETY: we own the mbuf (and its chain); freeing returns every
        // segment to its pool and drops shared-buffer references.
        unsafe { dpdk_sys::rte_pktmbuf_free(self.raw.as_ptr()) }
    }
}

/// A [`Frame`] over an mbuf's first segment; writes the new data offset and
/// length back into the mbuf when dropped.
pub struct MbufFrame<'a> {
    frame: Frame<'a>,
    raw: NonNull<dpdk_sys::rte_mbuf>,
    /// Offsets at creation: most functions keep them, and then the mbuf is
    /// not written at all.
    head: usize,
    len: usize,
}

impl<'a> std::ops::Deref for MbufFrame<'a> {
    type Target = Frame<'a>;
    fn deref(&self) -> &Frame<'a> {
        &self.frame
    }
}

impl std::ops::DerefMut for MbufFrame<'_> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.frame
    }
}

impl Drop for MbufFrame<'_> {
    #[inline]
    fn drop(&mut self) {
        let (head, len) = (self.frame.head(), self.frame.len());
        if head == self.head && len == self.len {
            return;
        }
        // SAFETY: the frame borrowed the mbuf mutably and is going away; the
        // offsets it reports stay inside the buffer (Frame keeps them so).
        unsafe {
            let m = self.raw.as_mut();
            let old_len = m.data_len as u32;
            m.data_off = head as u16;
            m.data_len = len as u16;
            m.pkt_len = m.pkt_len - old_len + len as u32;
        }
    }
}
