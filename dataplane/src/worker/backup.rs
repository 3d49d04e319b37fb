//! The backup's path: follow the shard's replication stream in sequence
//! order, run the same function with the primary's time, keep the egress in
//! the shadow ring until `tx_done` releases it; keep a window of the
//! ingress of its own data ports; transmit nothing.

use std::sync::atomic::Ordering::Relaxed;

use super::held::{copy_out, span, Egress};
use super::{InPlace, ReplState, Scratch, Worker, MAX_BURST};
use crate::clock::TscClock;
use crate::dpdk::{Mbuf, Mempool};
use crate::nf::DropReason;
use crate::nf::{NetworkFunction, Owner, PacketCtx, Side, Verdict};
use crate::replication::builder::build_marker_of;
use crate::replication::seq::SeqVerdict;
use crate::replication::{frame_hash, FrameType, ReplHeader, ReplicationFrame, HEADER_LEN};
use crate::stats::bump;
use crate::wire::ethernet::{EtherType, EthernetFrame, HEADER_LEN as ETH_LEN};
use crate::wire::get_u32;
use crate::wire::replication::{ingress, AckBody, AuditBody, BatchRecord, BatchRecords, MAX_BATCH_RECORDS};

impl<F: NetworkFunction> Worker<F> {
    /// One backup iteration. Returns whether anything arrived.
    pub(crate) fn poll_backup(&mut self, st: &mut ReplState, s: &mut Scratch, clock: &TscClock) -> bool {
        let now = clock.now_ns();
        // Data ports first: a frame's own copy must be in the window before
        // its replica comes to retire it.
        let windowed = self.window_data_ports(st, s, now);
        let got = self.poll_replication(st, s, now);
        self.ack_if_due(st, got < MAX_BURST, now);
        got + windowed > 0
    }

    /// Flow control: tells the primary how far this shard got
    /// ([`crate::replication::flow`]), on the replication port's TX queue.
    /// `drained`: the replication queue had nothing more.
    pub(crate) fn ack_if_due(&mut self, st: &mut ReplState, drained: bool, now: u64) {
        let Some(repl) = self.repl.as_mut() else {
            return;
        };
        let last = st.tracker.last();
        // Without flow control a backup still says, at the refresh pace,
        // that a shard is not synchronized: it is how it asks for the
        // checkpoint (`worker::checkpoint`).
        let due = if repl.settings.flow_window != 0 {
            st.ack.due(last, drained, now)
        } else {
            !st.tracker.synced() && st.ack.refresh_due(now)
        } || st.ckpt.progress_due();
        // Only once the primary was heard: a backup that joins a running
        // primary must not make it wait for sequence 0.
        if st.last_time_ns == 0 || !due {
            return;
        }
        let h = ReplHeader {
            shard: self.shard,
            epoch: st.epoch,
            seq: last,
            tx_done: st.tx_done_seen,
            time_ns: st.last_time_ns,
            ingress: 0,
            length: 0,
        };
        let body = AckBody {
            node: repl.settings.node_id,
            synced: st.tracker.synced(),
        }
        .emit();
        let progress = st.ckpt.progress();
        let progress_bytes = progress.map(|p| p.emit());
        let parts: &[&[u8]] = match &progress_bytes {
            Some(p) => &[&body, p],
            None => &[&body],
        };
        let Some(m) = build_marker_of(FrameType::Ack, &h, parts, &repl.encap, &repl.headers) else {
            self.shared.counters.drop(DropReason::NoMbuf, 1);
            return;
        };
        // A refused ACK is freed; the next one is due at once.
        if repl.tx.send_one(m) {
            st.ack.sent(last, now);
            st.acks_tx += 1;
            if let Some(p) = progress {
                st.ckpt.acked_pieces = p.pieces;
            }
        }
    }

    /// Moves what the data ports received into the ingress windows.
    pub(crate) fn window_data_ports(&mut self, st: &mut ReplState, s: &mut Scratch, now: u64) -> usize {
        let mut windowed = 0;
        for side in Side::ALL {
            let n = self.data[side.index()].rx.rx_burst_n(&mut s.rx, MAX_BURST);
            if n == 0 {
                continue;
            }
            windowed += n;
            while let Some(m) = s.rx.pop() {
                let h = frame_hash(m.data());
                st.windows[side.index()].push(h, now, m);
            }
        }
        bump(&self.shared.counters.ignored_not_owner, windowed as u64);
        windowed
    }

    /// Reads and handles this shard's pending replication frames.
    pub(crate) fn poll_replication(&mut self, st: &mut ReplState, s: &mut Scratch, now: u64) -> usize {
        let Some(repl) = self.repl.as_mut() else {
            return 0;
        };
        s.frames.clear();
        let mut n = repl.source.rx.rx_burst_n(&mut s.rx, MAX_BURST);
        while let Some(m) = s.rx.pop() {
            s.frames.push(m);
        }
        if let Some(inbox) = &repl.source.inbox {
            n += inbox.dequeue_into(&mut s.frames, MAX_BURST);
        }
        if n == 0 {
            return 0;
        }
        // Take the vector out to satisfy the borrow of `self`; its capacity
        // comes back, so nothing is allocated per iteration.
        let mut frames = std::mem::take(&mut s.frames);
        // The records' pool, once per burst (a clone of its `Arc`, for the
        // same borrow).
        let pool = repl.pool.clone();
        let mut it = frames.drain(..).peekable();
        while let Some(m) = it.next() {
            // The next frame's lines come in while this one is processed.
            if let Some(next) = it.peek() {
                next.prefetch_data();
            }
            self.backup_frame(m, &pool, st, now);
        }
        drop(it);
        s.frames = frames;
        let replay = self.repl.as_ref().map(|r| r.settings.replay).unwrap_or(0);
        let freed = &mut st.freed;
        st.shadow
            .release_upto_with(st.tx_done_seen.saturating_sub(replay), |e| {
                if let Egress::Own(_, m) = e {
                    freed.push(m);
                }
            });
        st.held.release_before(st.shadow.oldest(), &mut st.freed);
        Mbuf::free_bulk(&mut st.freed);
        n
    }

    /// One replication frame: one record, or a BATCH of DATA records (the
    /// primary batches small packets).
    fn backup_frame(&mut self, mut m: Mbuf, pool: &Mempool, st: &mut ReplState, now: u64) {
        let head = {
            let d = m.data();
            match EthernetFrame::new_checked(d) {
                Ok(e) if e.ethertype() == EtherType::LOCKSTEP => {}
                _ => {
                    bump(&self.shared.repl.foreign, 1);
                    return;
                }
            }
            ReplicationFrame::new_checked(&d[ETH_LEN..]).map(|f| (f.frame_type(), f.header()))
        };
        let Ok((t, head)) = head else {
            bump(&self.shared.repl.malformed, 1);
            return;
        };
        if t == FrameType::Ack {
            // Another backup's, to the primary: not this stream's.
            bump(&self.shared.repl.acks_rx, 1);
            return;
        }
        if head.shard != self.shard {
            self.steer(head.shard, m);
            return;
        }
        if t == FrameType::Checkpoint {
            // Its body is longer than a marker's: taken here, in order.
            if self.follows(&head, st, now) {
                let d = m.data();
                let body = &d[(ETH_LEN + HEADER_LEN).min(d.len())..];
                let body = &body[..(head.length as usize).min(body.len())];
                self.on_checkpoint_piece(body, st);
            }
            return;
        }
        if t != FrameType::Batch {
            // One record: its frame is this mbuf, past the encapsulation
            // (no copy: the payload stays where the NIC put it).
            let extra = m.pkt_len().saturating_sub(ETH_LEN + HEADER_LEN + head.length as usize);
            let (t, h, marker) = header_of(&m.data()[ETH_LEN..]);
            if t == FrameType::Data && (!m.adj((ETH_LEN + HEADER_LEN) as u16) || !m.trim(extra as u16)) {
                bump(&self.shared.repl.malformed, 1);
                return;
            }
            let hash = frame_hash(m.data());
            self.backup_record((t, h, marker, Some((Body::Own(m), hash))), None, pool, st, now);
            return;
        }
        // A batch: its records' ingress and place in the frame.
        let mut records = [BatchRecord {
            ingress: 0,
            start: 0,
            len: 0,
        }; MAX_BATCH_RECORDS];
        let mut count = 0;
        {
            const BODY_AT: usize = ETH_LEN + HEADER_LEN;
            let body = &m.data()[BODY_AT..BODY_AT + head.length as usize];
            let mut it = BatchRecords::new(body);
            for (slot, r) in records.iter_mut().zip(it.by_ref()) {
                *slot = BatchRecord {
                    start: BODY_AT + r.start,
                    ..r
                };
                count += 1;
            }
            if !it.complete() {
                // What follows the last whole record is lost: a gap the
                // backup will see.
                bump(&self.shared.repl.malformed, 1);
            }
        }
        // The function's prefetch passes over the batch's packets first, as
        // the primary made them over its burst (a backup that looked its
        // sessions up one miss at a time would fall behind).
        for stage in 0..self.nf.prefetch_stages() {
            let d = m.data();
            for r in &records[..count] {
                if let Some(side) = Side::from_index((r.ingress & ingress::PORT_MASK) as usize) {
                    self.nf.prefetch(&d[r.start..r.start + r.len], side, stage);
                }
            }
        }
        // A shard's own DATA record (no steering flag) is processed where
        // it lies (module `held`);
        // one that must leave the batch gets an mbuf of its own. A chunk of
        // records is decoded (and those copied out), then processed:
        // processed right after its copy, a record's first bytes would be
        // read back before the copy's stores landed (a store-forwarding
        // stall per record).
        let id = st.held.next_id();
        let mut held_upto = None;
        let mut chunk: [Option<Record>; RECORD_CHUNK] = [const { None }; RECORD_CHUNK];
        let mut seq = head.seq;
        for group in records[..count].chunks(RECORD_CHUNK) {
            for (slot, r) in chunk.iter_mut().zip(group) {
                let h = ReplHeader {
                    seq,
                    ingress: r.ingress,
                    length: r.len as u16,
                    ..head
                };
                seq += 1;
                let src = &m.data()[r.start..r.start + r.len];
                // Hashed where it lies, as received (before the function
                // rewrites it, and before a copy's stores).
                let hash = frame_hash(src);
                let body = if r.ingress & ingress::STEERING == 0 {
                    Body::InBatch {
                        start: r.start as u16,
                        len: r.len as u16,
                    }
                } else {
                    let Some(copy) = copy_out(src, &mut st.record_stash, pool) else {
                        self.shared.counters.drop(DropReason::NoMbuf, 1);
                        // The record is lost to this backup: a gap it will see.
                        continue;
                    };
                    Body::Own(copy)
                };
                *slot = Some((FrameType::Data, h, [0; MARKER_BODY], Some((body, hash))));
            }
            for slot in chunk.iter_mut().take(group.len()) {
                if let Some(rec) = slot.take() {
                    let seq = rec.1.seq;
                    if self.backup_record(rec, Some((&mut m, id)), pool, st, now) {
                        held_upto = Some(seq);
                    }
                }
            }
        }
        if let Some(last) = held_upto {
            st.held.hold(last, m);
        }
    }

    /// One record: a DATA record comes with the frame it carries (its own
    /// mbuf, or a range of `batch`, the batch frame it came in and the
    /// identifier it is held under) and the frame's hash. Returns whether
    /// its egress stays in `batch`.
    fn backup_record(
        &mut self,
        (t, h, marker, body): Record,
        batch: Option<(&mut Mbuf, u64)>,
        pool: &Mempool,
        st: &mut ReplState,
        now: u64,
    ) -> bool {
        if !self.follows(&h, st, now) {
            return false;
        }
        let r = &self.shared.repl;
        match t {
            FrameType::Data => {
                bump(&r.frames_rx, 1);
                let Some((body, hash)) = body else { return false };
                if st.tracker.on_data(h.seq, h.tx_done) == SeqVerdict::Old {
                    return false;
                }
                let flags = h.ingress & !ingress::PORT_MASK;
                let side = Side::from_index((h.ingress & ingress::PORT_MASK) as usize);
                let Some(side) = side.filter(|_| flags & !ingress::FLAGS == 0) else {
                    bump(&r.malformed, 1);
                    return false;
                };
                // Only a shard's own record (no steering flag) stays in its
                // batch.
                if matches!(body, Body::InBatch { .. }) && (flags & ingress::STEERING != 0 || batch.is_none()) {
                    bump(&r.malformed, 1);
                    return false;
                }
                if flags & ingress::HANDED_OFF != 0 {
                    let Body::Own(m) = body else { return false };
                    // Processed by the shard it was handed to, in its own
                    // stream: until that shard's replica settles it, the
                    // packet waits in the ledger. The replica's own bytes
                    // wait there, not this backup's copy from its data
                    // port: whether, and when, this backup saw the packet
                    // does not matter then.
                    st.windows[side.index()].replicated(hash);
                    let owner = match self.nf.owner(m.data(), side) {
                        Owner::Shard(k) => k,
                        _ => self.shard,
                    };
                    if let Some(l) = self.repl.as_ref().and_then(|p| p.handoff.as_ref()) {
                        l.park(owner, hash, (side, m), now);
                    }
                    bump(&self.shared.counters.steered_out, 1);
                    return false;
                }
                if flags & ingress::STEERED == 0 {
                    // Its copy, if this backup got one, is in this shard's
                    // window (a steered packet's is in the receiving
                    // shard's, handed to the ledger by its HANDED_OFF record).
                    st.windows[side.index()].replicated(hash);
                } else if flags & ingress::COPY == 0 {
                    if let Some(l) = self.repl.as_ref().and_then(|p| p.handoff.as_ref()) {
                        l.settle(self.shard, hash, now);
                    }
                }
                if F::TRANSPARENT_L2 {
                    let bytes = match (&body, &batch) {
                        (Body::Own(m), _) => m.data(),
                        (Body::InBatch { start, len }, Some((b, _))) => &b.data()[span(*start, *len)],
                        (Body::InBatch { .. }, None) => &[],
                    };
                    if let Ok(e) = EthernetFrame::new_checked(bytes) {
                        st.macs[side.index()].learn(e.src());
                    }
                }
                if flags & ingress::STEERED == 0 {
                    self.shared.counters.rx(side, 1);
                } else {
                    bump(&self.shared.counters.steered_in, 1);
                }
                if st.ckpt.installing() {
                    // The state it would change is being replaced by the
                    // primary's as of a later boundary.
                    return false;
                }
                let ctx = PacketCtx::with_flags(side, h.time_ns, flags);
                let mut m = match (body, batch) {
                    (Body::Own(mut m), _) => {
                        let v = self.verdict(&mut m, &ctx);
                        self.keep(h.seq, v, m, st);
                        return false;
                    }
                    (Body::InBatch { start, len }, Some((b, batch))) => {
                        let data = &mut b.data_mut()[span(start, len)];
                        match self.verdict_in_place(data, &ctx) {
                            InPlace::Out(out) => {
                                st.shadow.push(h.seq, Egress::InBatch { out, batch, start, len });
                                return true;
                            }
                            InPlace::Done => return false,
                            // The general path, on a copy of its own.
                            InPlace::General => match copy_out(data, &mut st.record_stash, pool) {
                                Some(m) => m,
                                None => {
                                    self.shared.counters.drop(DropReason::NoMbuf, 1);
                                    return false;
                                }
                            },
                        }
                    }
                    (Body::InBatch { .. }, None) => return false,
                };
                let v = self.verdict_general(&mut m, &ctx);
                self.keep(h.seq, v, m, st);
                false
            }
            FrameType::Keepalive => {
                bump(&r.keepalives_rx, 1);
                st.tracker.on_marker(h.seq, h.tx_done);
                false
            }
            FrameType::Switchover => {
                st.tracker.on_marker(h.seq, h.tx_done);
                let target = get_u32(&marker, 0);
                if self.repl.as_ref().is_some_and(|p| p.settings.node_id == target) {
                    st.switchover_for = target;
                }
                false
            }
            FrameType::Audit => {
                st.tracker.on_marker(h.seq, h.tx_done);
                self.audit(&marker, h.seq, st);
                false
            }
            FrameType::SyncMark => {
                st.tracker.on_marker(h.seq, h.tx_done);
                self.on_sync_mark(&marker, h.seq, h.tx_done, st);
                false
            }
            // Taken out (ACK, CHECKPOINT) or taken apart (BATCH) in
            // `backup_frame`.
            FrameType::Ack | FrameType::Batch | FrameType::Checkpoint => false,
        }
    }

    /// What every record of the stream followed tells: its epoch (an older
    /// one is refused: false), that the link is alive, the primary's
    /// `tx_done` and time.
    #[inline]
    fn follows(&mut self, h: &ReplHeader, st: &mut ReplState, now: u64) -> bool {
        let r = &self.shared.repl;
        if h.epoch < st.epoch {
            bump(&r.stale_epoch, 1);
            return false;
        }
        if h.epoch > st.epoch {
            st.epoch = h.epoch;
            r.epoch_seen.fetch_max(h.epoch, Relaxed);
        }
        r.last_rx_ns.store(now, Relaxed);
        st.tx_done_seen = st.tx_done_seen.max(h.tx_done);
        st.last_time_ns = h.time_ns;
        true
    }

    /// Keeps a record's egress in the shadow ring, or counts why there is
    /// none.
    #[inline]
    fn keep(&self, seq: u64, v: Verdict, m: Mbuf, st: &mut ReplState) {
        if let Some(out) = self.egress_of(v, 1) {
            st.shadow.push(seq, Egress::Own(out, m));
        }
    }

    /// Compares the primary's digest of a slice of the state with this
    /// backup's at the same sequence boundary. A difference means this
    /// shard's state diverged (a bug, a corrupted replica): it is no longer
    /// synchronized, so it will refuse to take over.
    fn audit(&mut self, body: &[u8; MARKER_BODY], seq: u64, st: &mut ReplState) {
        if !st.tracker.synced() || st.tracker.last() != seq {
            return;
        }
        let r = &self.shared.repl;
        bump(&r.audits, 1);
        let agrees = AuditBody::parse(body).is_some_and(|a| self.nf.audit_digest(a.slice, a.of) == a.digest);
        if !agrees {
            bump(&r.audit_mismatches, 1);
            st.tracker.mark_unsynced();
        }
    }

    /// Hands another shard's frame to that shard's inbox.
    fn steer(&mut self, shard: u16, m: Mbuf) {
        let r = &self.shared.repl;
        let ring = self
            .repl
            .as_ref()
            .and_then(|p| p.steer.get(shard as usize).cloned().flatten());
        match ring {
            Some(ring) => match ring.enqueue(m) {
                Ok(()) => bump(&r.steered, 1),
                Err(_) => bump(&r.steer_drops, 1),
            },
            None => bump(&r.foreign, 1),
        }
    }
}

/// How much of a marker's body a record's handling needs: SWITCHOVER's
/// target (4 bytes), an [`AuditBody`] (16).
const MARKER_BODY: usize = AuditBody::LEN;

/// Where a DATA record's frame is.
enum Body {
    /// In an mbuf of its own.
    Own(Mbuf),
    /// Bytes `start..start + len` of the batch frame it came in.
    InBatch { start: u16, len: u16 },
}

/// A record decoded, waiting to be processed: type, header, the start of a
/// marker's body, and a DATA record's frame with its hash.
type Record = (FrameType, ReplHeader, [u8; MARKER_BODY], Option<(Body, u64)>);

/// Records copied out of a batch before the first of them is processed.
const RECORD_CHUNK: usize = 16;

/// Type, header and the start of the body of a record already validated
/// (zero-filled when shorter).
// Always inlined: its header returned through memory would be read back
// before the stores that wrote it retire (a store-forwarding stall).
#[inline(always)]
fn header_of(rec: &[u8]) -> (FrameType, ReplHeader, [u8; MARKER_BODY]) {
    let f = ReplicationFrame::new_unchecked(rec);
    let mut marker = [0u8; MARKER_BODY];
    if f.frame_type() != FrameType::Data {
        let body = f.body();
        let n = body.len().min(MARKER_BODY);
        marker[..n].copy_from_slice(&body[..n]);
    }
    (f.frame_type(), f.header(), marker)
}
