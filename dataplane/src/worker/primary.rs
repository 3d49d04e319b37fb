//! The primary's path: stamp, replicate before anything else (output
//! commit), process, transmit; KEEPALIVE when idle; watch the replication
//! link for a higher epoch (fencing).

use std::sync::atomic::Ordering;

use super::steer::untag;
use super::{nic_vouched, remove_at, ReplState, Scratch, Worker, MAX_BURST};
use crate::clock::TscClock;
use crate::dpdk::eal::rdtsc;
use crate::dpdk::Mbuf;
use crate::nf::{DropReason, NetworkFunction, Owner, PacketCtx, Side};
use crate::replication::builder::{build_data, build_marker, Batch, COPY_MAX};
use crate::replication::{FrameType, ReplHeader, ReplicationFrame, ENCAP_LEN};
use crate::stats::bump;
use crate::wire::ethernet::{EtherType, EthernetFrame, HEADER_LEN as ETH_LEN};
use crate::wire::replication::{ingress, AckBody, AuditBody, CheckpointProgress};

impl<F: NetworkFunction> Worker<F> {
    /// One primary iteration. Returns whether anything arrived.
    pub(crate) fn poll_primary(&mut self, st: &mut ReplState, s: &mut Scratch, clock: &TscClock) -> bool {
        let burst = self.burst.clamp(1, MAX_BURST);
        let mut t = rdtsc();
        let mut busy = false;
        // Flow control: the data ports give at most what the backups'
        // acknowledgments allow; short of a burst, the replication port is
        // read for fresh ones first.
        let mut credit = st.flow.credit(st.next_seq);
        if credit < burst as u64 {
            st.epoch_watch_in = EPOCH_WATCH_EVERY;
            self.read_replication_port(st, s, clock.ns(t));
            credit = st.flow.credit(st.next_seq);
        }
        // A checkpoint closing at this sequence boundary holds new ingress
        // until its last pieces are out (module `checkpoint`).
        if st.ckpt.holds_ingress() {
            credit = 0;
        }
        // Time held back: each held iteration adds the time since the
        // previous one.
        if credit == 0 {
            if st.held_at != 0 {
                st.flow_held_ns += clock.ns(t.wrapping_sub(st.held_at));
            }
            st.held_at = t;
        } else {
            st.held_at = 0;
        }
        for side in Side::ALL {
            let want = credit.min(burst as u64) as usize;
            if want == 0 {
                break;
            }
            let n = self.data[side.index()].rx.rx_burst_n(&mut s.rx, want);
            if n == 0 {
                continue;
            }
            credit -= n as u64;
            busy = true;
            self.shared.counters.rx(side, n as u64);
            s.rx.drain_into(&mut s.pending);
            self.primary_ingest(side, 0, st, s, clock.ns(t));
            let end = rdtsc();
            s.latency.saturating_record(clock.ns(end.wrapping_sub(t)).max(1));
            t = end;
        }
        // (Packets steered here take sequence numbers too.)
        let held = st.ckpt.holds_ingress();
        if !held && self.take_parked(s) > 0 {
            busy = true;
            self.ingest_inbox(st, s, clock.ns(t));
        }
        if !held && self.take_inbox(s) > 0 {
            busy = true;
            self.ingest_inbox(st, s, clock.ns(t));
        }
        let now = clock.ns(t);
        // Under load, every EPOCH_WATCH_EVERY iterations (microseconds
        // apart: the fence still comes "at once" next to the heartbeats'
        // milliseconds); when idle, every time.
        if !busy || st.epoch_watch_in == 0 {
            st.epoch_watch_in = EPOCH_WATCH_EVERY;
            self.read_replication_port(st, s, now);
        } else {
            st.epoch_watch_in -= 1;
        }
        let keepalive_due = self
            .repl
            .as_ref()
            .is_some_and(|r| now.saturating_sub(st.last_frame_ns) >= r.settings.keepalive_ns);
        // An idle shard tells the backups its final tx_done at once, so a
        // takeover right now would resend nothing the primary already sent.
        if keepalive_due || (!busy && st.tx_done_sent < st.tx_done) {
            self.send_marker(FrameType::Keepalive, &[], st, now);
        }
        self.audit_if_due(st, now);
        self.checkpoint_step(st, now, busy);
        busy
    }

    /// Every `audit_ns`, the digest of the next slice of the function's
    /// state goes in-band as an AUDIT at the current sequence boundary.
    fn audit_if_due(&mut self, st: &mut ReplState, now: u64) {
        let every = self.repl.as_ref().map_or(0, |r| r.settings.audit_ns);
        if every == 0 || now < st.next_audit_ns {
            return;
        }
        st.next_audit_ns = now.saturating_add(every);
        let slice = st.audit_slice;
        st.audit_slice = (slice + 1) % AUDIT_SLICES;
        let body = AuditBody {
            slice,
            of: AUDIT_SLICES,
            digest: self.nf.audit_digest(slice, AUDIT_SLICES),
        };
        if self.send_marker(FrameType::Audit, &body.emit(), st, now) {
            bump(&self.shared.repl.audits, 1);
        }
    }

    /// What `s.inbox` holds (steered here, or parked for this shard by a
    /// takeover's ledger), through the primary path as this shard's
    /// ingress, in runs of one side and kind.
    fn ingest_inbox(&mut self, st: &mut ReplState, s: &mut Scratch, local_ns: u64) {
        let mut inbox = std::mem::take(&mut s.inbox);
        let mut it = inbox.drain(..).peekable();
        while let Some(m) = it.next() {
            let key = untag(&m);
            s.pending.push(m);
            if it.peek().map(untag) != Some(key) || s.pending.len() == MAX_BURST {
                self.primary_ingest(key.0, key.1, st, s, local_ns);
            }
        }
        drop(it);
        s.inbox = inbox;
    }

    /// Stamps, replicates, processes and transmits the packets in
    /// `s.pending`, all received on `side` at local time `local_ns`, with
    /// the replication `flags` of their kind (0 for the data ports').
    pub(crate) fn primary_ingest(
        &mut self,
        side: Side,
        flags: u16,
        st: &mut ReplState,
        s: &mut Scratch,
        local_ns: u64,
    ) {
        self.prefetch_burst(&s.pending, side);
        let steering = self.steering.is_some();
        // Whether this side's NIC verifies header checksums (read before
        // the replication path is borrowed).
        let nic_checks = self.data[side.index()].rx_ip_checksum;
        s.owners.clear();
        if steering {
            for m in s.pending.iter() {
                s.owners.push(self.owner_of(m, side, flags));
            }
        }
        let Some(repl) = self.repl.as_mut() else {
            return;
        };
        let counters = &self.shared.counters;
        let now_ns = local_ns.wrapping_add(st.time_offset);
        let span = self.nf.rewrite_span();
        let base = st.next_seq;
        // 1. Replicate first: each packet's record, in order, small ones
        //    batched; `s.frame_pkts[f]` = packets carried by frame `f`.
        let max_frame = repl.settings.batch_bytes;
        s.frame_pkts.clear();
        s.dropped.clear();
        let mut batch: Option<Batch> = None;
        let mut in_batch = 0u16;
        let mut kept = 0usize;
        let mut h = ReplHeader {
            shard: self.shard,
            epoch: st.epoch,
            seq: 0,
            tx_done: st.tx_done,
            time_ns: now_ns,
            ingress: 0,
            length: 0,
        };
        // The packets stay in place; the few dropped here (their positions
        // noted) leave `pending` after the loop.
        for (i, m) in s.pending.iter().enumerate() {
            let owner = if steering { s.owners[i] } else { Owner::Here };
            let handed_off = if matches!(owner, Owner::Shard(_)) {
                ingress::HANDED_OFF
            } else {
                0
            };
            if !F::BURST_VERDICT && m.nb_segs() != 1 {
                counters.drop(DropReason::MultiSegment, 1);
                s.dropped.push(i);
                continue;
            }
            let seq = base + kept as u64 + 1;
            // The NIC's word on the header checksum travels with the
            // packet: the backup's function must see what the primary's saw.
            let checksum = if nic_vouched(nic_checks, m) {
                ingress::IP_CHECKSUM_OK
            } else {
                0
            };
            let ingress = side as u16 | flags | handed_off | checksum;
            let len = m.data_len();
            // A record copies the first segment: a chain goes zero-copy.
            let batched = max_frame > 0 && len <= COPY_MAX && m.nb_segs() == 1 && {
                let record = |b: &mut Batch| b.append(ingress, m);
                if batch.as_mut().is_some_and(|b| !record(b)) {
                    // Full: send it and start the next one.
                    if let Some(full) = batch.take() {
                        let _ = s.repl_tx.push(full.finish());
                        s.frame_pkts.push(std::mem::take(&mut in_batch));
                    }
                }
                if batch.is_none() {
                    let first = ReplHeader { seq, ..h };
                    batch = s
                        .batch_stash
                        .take(&repl.pool)
                        .and_then(|m| Batch::start(m, &repl.encap, max_frame, &first));
                    if !batch.as_mut().is_some_and(record) {
                        batch = None;
                    }
                }
                batch.is_some()
            };
            if batched {
                in_batch += 1;
            } else {
                // A large packet goes on its own, zero-copy, after the batch
                // so far (the order on the wire is the sequence order).
                if let Some(b) = batch.take() {
                    let _ = s.repl_tx.push(b.finish());
                    s.frame_pkts.push(std::mem::take(&mut in_batch));
                }
                (h.seq, h.ingress, h.length) = (seq, ingress, m.pkt_len() as u16);
                let Some(r) = Mbuf::alloc(&repl.headers)
                    .and_then(|head| build_data(m, &h, span, &repl.encap, head, &repl.clones))
                else {
                    counters.drop(DropReason::NoMbuf, 1);
                    s.dropped.push(i);
                    continue;
                };
                // Room is guaranteed: at most one frame per packet of a burst.
                let _ = s.repl_tx.push(r);
                s.frame_pkts.push(1);
            }
            kept += 1;
        }
        if !s.dropped.is_empty() {
            remove_at(&mut s.pending, &s.dropped);
            if steering {
                remove_at(&mut s.owners, &s.dropped);
            }
        }
        if let Some(b) = batch.take() {
            let _ = s.repl_tx.push(b.finish());
            s.frame_pkts.push(in_batch);
        }
        if kept == 0 {
            return;
        }
        let frames = s.frame_pkts.len();
        let sent_frames = repl.tx.tx_prefix(&mut s.repl_tx, frames);
        s.repl_tx.clear();
        let sent: usize = s.frame_pkts[..sent_frames].iter().map(|k| *k as usize).sum();
        if sent < kept {
            // Output commit: a packet whose replica did not leave is never
            // processed, and its sequence number is reused.
            counters.drop(DropReason::ReplicationRefused, (kept - sent) as u64);
            s.pending.truncate(sent);
            s.owners.truncate(sent);
        }
        st.next_seq += sent as u64;
        st.last_frame_ns = local_ns;
        bump(&self.shared.repl.frames_tx, sent_frames as u64);
        // 2. Process, 3. transmit.
        let ctx = PacketCtx::with_flags(side, now_ns, flags);
        if steering {
            self.dispatch_pending(&ctx, s);
        } else {
            self.process_pending(&ctx, s);
        }
        let (sent, refused) = self.transmit(s);
        self.note_egress(st, sent, local_ns);
        // tx_done covers only egress the NIC took: after a refusal it stays
        // at the previous burst, so a takeover now would resend this one.
        if refused == 0 {
            st.tx_done = st.next_seq;
        } else {
            st.tx_done = base;
        }
    }

    /// Sends a KEEPALIVE / SWITCHOVER marker carrying the last sequence and
    /// `tx_done`.
    pub(crate) fn send_marker(&mut self, t: FrameType, body: &[u8], st: &mut ReplState, local_ns: u64) -> bool {
        let h = self.boundary_header(st, local_ns);
        let Some(repl) = self.repl.as_mut() else {
            return false;
        };
        let Some(m) = build_marker(t, &h, body, &repl.encap, &repl.headers) else {
            self.shared.counters.drop(DropReason::NoMbuf, 1);
            return false;
        };
        let _ = repl.tx.send_one(m);
        st.last_frame_ns = local_ns;
        st.tx_done_sent = st.tx_done;
        if t == FrameType::Keepalive {
            bump(&self.shared.repl.keepalives_tx, 1);
        }
        true
    }

    /// The header of a marker at the current sequence boundary: the last
    /// sequence assigned, `tx_done`, the time.
    pub(crate) fn boundary_header(&self, st: &ReplState, local_ns: u64) -> ReplHeader {
        ReplHeader {
            shard: self.shard,
            epoch: st.epoch,
            seq: st.next_seq,
            tx_done: st.tx_done,
            time_ns: local_ns.wrapping_add(st.time_offset),
            ingress: 0,
            length: 0,
        }
    }

    /// A primary still reads the replication port: a frame with a higher
    /// epoch means another node took over, and every worker of this node
    /// must stop transmitting at once (the control thread confirms); an ACK
    /// of this epoch goes on the node's board, whichever shard it names.
    /// Then this shard's flow gate is refreshed from the board.
    fn read_replication_port(&mut self, st: &mut ReplState, s: &mut Scratch, now: u64) {
        let Some(repl) = self.repl.as_mut() else {
            return;
        };
        repl.source.rx.rx_burst_n(&mut s.rx, MAX_BURST);
        let r = &self.shared.repl;
        while let Some(m) = s.rx.pop() {
            let d = m.data();
            let frame = EthernetFrame::new_checked(d)
                .ok()
                .filter(|e| e.ethertype() == EtherType::LOCKSTEP && d.len() >= ENCAP_LEN)
                .and_then(|_| ReplicationFrame::new_checked(&d[ETH_LEN..]).ok());
            let Some(f) = frame else {
                bump(&r.foreign, 1);
                continue;
            };
            let h = f.header();
            if h.epoch > st.epoch {
                repl.signals.fence_epoch.fetch_max(h.epoch, Ordering::SeqCst);
            } else if h.epoch < st.epoch || f.frame_type() != FrameType::Ack {
                bump(&r.stale_epoch, 1);
            } else {
                bump(&r.acks_rx, 1);
                let recorded = AckBody::parse(f.body()).map(|a| {
                    let ok = repl.signals.acks.record(a.node, h.shard, h.seq, a.synced, now).is_ok();
                    if let Some(c) = CheckpointProgress::parse_after_ack(f.body()) {
                        repl.signals.acks.record_progress(a.node, h.shard, c.id, c.pieces);
                    }
                    ok
                });
                if recorded != Some(true) {
                    bump(&r.malformed, 1);
                }
            }
        }
        st.flow_lag = st.flow.refresh(&repl.signals.acks, self.shard, st.next_seq, now);
    }
}

/// A busy primary reads its replication port for a higher epoch and the
/// backups' acknowledgments once per this many iterations (and every
/// iteration its flow credit is short of a burst): an empty read costs a
/// driver call per burst, over a nanosecond per packet.
const EPOCH_WATCH_EVERY: u32 = 16;

/// The state is audited in this many slices, one per AUDIT.
pub const AUDIT_SLICES: u32 = 64;
