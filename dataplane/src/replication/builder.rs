//! Replication frames as mbuf chains, and batches.
//!
//! Small packets (up to [`COPY_MAX`]) are copied, record after record, into
//! one BATCH frame of up to `batch_bytes`: one mbuf, one TX slot and one
//! free for a score of packets instead of one each, and the fields they
//! share written once. Larger packets travel one per frame, zero-copy:
//!
//! A DATA frame is a small header mbuf — Ethernet header, replication
//! header, and a copy of the first `span` bytes of the packet (the bytes the
//! function may rewrite in place) — chained to an indirect mbuf that shares
//! the rest of the packet's buffer (DPDK's `ipv4_multicast` clone pattern):
//! the payload is never copied, and the replica carries the bytes as
//! received even though the function then rewrites the original. Packets
//! shorter than [`COPY_MAX`] are copied whole into the header mbuf instead:
//! for them a copy is cheaper than an indirect mbuf.

use crate::dpdk::{Mbuf, Mempool};
use crate::wire::ethernet::{EtherType, EthernetFrame, HEADER_LEN as ETH_LEN};
use crate::wire::replication::{
    put_record_header, FrameType, ReplHeader, ReplicationFrame, HEADER_LEN, MAX_BATCH_RECORDS, RECORD_HEADER_LEN,
};
use crate::wire::MacAddr;

/// Packets up to this length are copied whole into the header mbuf.
pub const COPY_MAX: usize = 256;

/// Data room the header pool needs: encapsulation plus the largest copy.
pub const HEADER_DATA_ROOM: u16 = (dpdk_sys::RTE_PKTMBUF_HEADROOM as usize + ETH_LEN + HEADER_LEN + COPY_MAX) as u16;

/// The Ethernet addresses of replication frames.
#[derive(Clone, Copy, Debug)]
pub struct Encap {
    pub dst: MacAddr,
    pub src: MacAddr,
}

/// Writes the encapsulation into a fresh header mbuf and leaves `extra`
/// bytes after it for the caller.
#[inline]
fn encapsulate(mut m: Mbuf, enc: &Encap, t: FrameType, h: &ReplHeader, extra: usize) -> Option<Mbuf> {
    let buf = m.extend(ETH_LEN + HEADER_LEN + extra)?;
    let mut eth = EthernetFrame::new_unchecked(&mut buf[..]);
    eth.set_dst(enc.dst);
    eth.set_src(enc.src);
    eth.set_ethertype(EtherType::LOCKSTEP);
    ReplicationFrame::new_unchecked(&mut buf[ETH_LEN..ETH_LEN + HEADER_LEN]).emit(t, h);
    Some(m)
}

/// The DATA replica of `orig` (whose length `h.length` must already hold),
/// written into `head`, a fresh mbuf of the header pool. `None` when the
/// clone pool is empty (the caller drops the packet, counted).
#[inline]
pub fn build_data(orig: &Mbuf, h: &ReplHeader, span: usize, enc: &Encap, head: Mbuf, clones: &Mempool) -> Option<Mbuf> {
    let data = orig.data();
    let len = data.len();
    if len <= COPY_MAX && orig.nb_segs() == 1 {
        let mut m = encapsulate(head, enc, FrameType::Data, h, len)?;
        m.data_mut()[ETH_LEN + HEADER_LEN..].copy_from_slice(data);
        return Some(m);
    }
    let copy = span.min(len).min(COPY_MAX);
    let mut head = encapsulate(head, enc, FrameType::Data, h, copy)?;
    head.data_mut()[ETH_LEN + HEADER_LEN..].copy_from_slice(&data[..copy]);
    let mut tail = orig.clone_indirect(clones)?;
    if !tail.adj(copy as u16) {
        return None;
    }
    head.chain(tail).ok()
}

/// A KEEPALIVE, SWITCHOVER, AUDIT or SYNC_MARK frame with `body`.
pub fn build_marker(t: FrameType, h: &ReplHeader, body: &[u8], enc: &Encap, headers: &Mempool) -> Option<Mbuf> {
    build_marker_of(t, h, &[body], enc, headers)
}

/// [`build_marker`] with a body in parts (a CHECKPOINT's head and piece),
/// written straight into the mbuf from `pool`.
pub fn build_marker_of(t: FrameType, h: &ReplHeader, parts: &[&[u8]], enc: &Encap, pool: &Mempool) -> Option<Mbuf> {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    let mut hh = *h;
    hh.length = len as u16;
    let mut m = encapsulate(Mbuf::alloc(pool)?, enc, t, &hh, len)?;
    let mut at = ETH_LEN + HEADER_LEN;
    let d = m.data_mut();
    for p in parts {
        d[at..at + p.len()].copy_from_slice(p);
        at += p.len();
    }
    Some(m)
}

/// Where a batch's records start: after the Ethernet and BATCH headers.
const RECORDS_AT: usize = ETH_LEN + HEADER_LEN;

/// A BATCH frame being filled. It claims its whole room at the start and
/// gives back what is left when it is closed, so a record is two copies
/// into the buffer and no update of the mbuf's fields (the replication
/// path appends one record per small packet).
pub struct Batch {
    m: Mbuf,
    /// Bytes written so far, the headers included.
    used: usize,
    records: usize,
}

impl Batch {
    /// A batch of up to `max_frame` bytes (fewer if the buffer is smaller)
    /// in `m`, a fresh mbuf, its headers written: `h`'s shard, epoch,
    /// `tx_done` and time, its first record's sequence `h.seq`.
    #[inline]
    pub fn start(mut m: Mbuf, enc: &Encap, max_frame: usize, h: &ReplHeader) -> Option<Batch> {
        let room = max_frame.min(m.tailroom());
        if room < RECORDS_AT {
            return None;
        }
        let buf = m.extend(room)?;
        let mut eth = EthernetFrame::new_unchecked(&mut buf[..ETH_LEN]);
        eth.set_dst(enc.dst);
        eth.set_src(enc.src);
        eth.set_ethertype(EtherType::LOCKSTEP);
        let first = ReplHeader {
            ingress: 0,
            length: 0,
            ..*h
        };
        ReplicationFrame::new_unchecked(&mut buf[ETH_LEN..RECORDS_AT]).emit(FrameType::Batch, &first);
        Some(Batch {
            m,
            used: RECORDS_AT,
            records: 0,
        })
    }

    /// Appends the next record (the sequence after the last one's):
    /// `ingress` and a copy of `pkt`'s first segment; false when it does not
    /// fit.
    #[inline]
    pub fn append(&mut self, ingress: u16, pkt: &Mbuf) -> bool {
        let len = pkt.data_len();
        let at = self.used;
        let end = at + RECORD_HEADER_LEN + len;
        let buf = self.m.data_mut();
        if end > buf.len() || self.records == MAX_BATCH_RECORDS {
            return false;
        }
        let Some((head, body)) = buf[at..].split_first_chunk_mut::<RECORD_HEADER_LEN>() else {
            return false;
        };
        put_record_header(head, ingress, len as u16);
        // The rest of the room as the destination: the copy may run past
        // the record in whole blocks; the next record or finish() covers it.
        if pkt.copy_data_to(body).is_none() {
            return false;
        }
        self.used = end;
        self.records += 1;
        true
    }

    /// Whether no record was appended yet.
    pub fn is_empty(&self) -> bool {
        self.records == 0
    }

    /// The frame, as long as what was written.
    #[inline]
    pub fn finish(mut self) -> Mbuf {
        let body = (self.used - RECORDS_AT) as u16;
        ReplicationFrame::new_unchecked(&mut self.m.data_mut()[ETH_LEN..RECORDS_AT]).set_length(body);
        let spare = self.m.data_len() - self.used;
        if spare > 0 {
            // Cannot fail: the frame is one segment at least `used` long.
            let _ = self.m.trim(spare as u16);
        }
        self.m
    }
}
