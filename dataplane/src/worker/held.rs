//! What the backup's shadow ring holds, and the batch frames it holds it in.
//!
//! A record of a batch frame that the function's fast path takes is
//! rewritten where it lies, inside the batch: its egress is a range of that
//! frame, kept with the frame until `tx_done` releases it. No mbuf is taken,
//! filled and freed per record (on the backup, for 64-byte packets, that
//! was a fifth of the time per record); a takeover copies the few ranges it
//! resends into mbufs of their own. A record the fast path declines, or
//! that must leave its batch (handed to another shard), is copied out as
//! before.

use std::collections::VecDeque;

use crate::dpdk::mbuf::MbufStash;
use crate::dpdk::{Mbuf, Mempool};
use crate::nf::Side;

/// One egress packet the backup computed.
pub(crate) enum Egress {
    /// A frame of its own.
    Own(Side, Mbuf),
    /// Bytes `start..start + len` of the held batch frame `batch`.
    InBatch {
        out: Side,
        batch: u64,
        start: u16,
        len: u16,
    },
}

/// Batch frames whose records the shadow ring still refers to, oldest
/// first, each with the highest sequence of those records. Identifiers are
/// consecutive: the front's is `first_id`.
pub(crate) struct HeldBatches {
    q: VecDeque<(u64, Mbuf)>,
    first_id: u64,
}

impl HeldBatches {
    pub fn new() -> HeldBatches {
        HeldBatches {
            q: VecDeque::new(),
            first_id: 0,
        }
    }

    /// The identifier the next batch held will get.
    #[inline]
    pub fn next_id(&self) -> u64 {
        self.first_id + self.q.len() as u64
    }

    /// Keeps `m`, whose records up to sequence `last_seq` are in the shadow
    /// ring under the identifier [`HeldBatches::next_id`] gave.
    #[inline]
    pub fn hold(&mut self, last_seq: u64, m: Mbuf) {
        self.q.push_back((last_seq, m));
    }

    /// Batch frames held.
    pub fn len(&self) -> usize {
        self.q.len()
    }

    /// Gives up (to `freed`) every batch none of whose records is left in a
    /// shadow ring whose oldest entry is `oldest` (`None`: empty).
    #[inline]
    pub fn release_before(&mut self, oldest: Option<u64>, freed: &mut Vec<Mbuf>) {
        while self.q.front().is_some_and(|(last, _)| oldest.is_none_or(|o| *last < o)) {
            if let Some((_, m)) = self.q.pop_front() {
                freed.push(m);
            }
            self.first_id += 1;
        }
    }

    /// The egress as a frame of its own: an `InBatch` range is copied into a
    /// fresh mbuf of `stash`. `None` when the pool is empty or the batch is
    /// no longer held.
    pub fn own_frame(&self, e: Egress, stash: &mut MbufStash, pool: &Mempool) -> Option<(Side, Mbuf)> {
        match e {
            Egress::Own(side, m) => Some((side, m)),
            Egress::InBatch { out, batch, start, len } => {
                let (_, b) = self.q.get(batch.checked_sub(self.first_id)? as usize)?;
                let m = copy_out(b.data().get(span(start, len))?, stash, pool)?;
                Some((out, m))
            }
        }
    }
}

/// Bytes `start..start + len` (of a held batch frame).
#[inline]
pub(crate) fn span(start: u16, len: u16) -> std::ops::Range<usize> {
    start as usize..start as usize + len as usize
}

/// `src` in a fresh mbuf of the stash.
#[inline]
pub(crate) fn copy_out(src: &[u8], stash: &mut MbufStash, pool: &Mempool) -> Option<Mbuf> {
    let mut copy = stash.take(pool)?;
    copy.extend(src.len())?.copy_from_slice(src);
    Some(copy)
}
