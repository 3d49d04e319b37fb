//! The checkpoint protocol, in band (DESIGN.md §5): how a primary shard
//! brings a backup that is not synchronized (started after the stream, or
//! a restarted old primary, or one that lost frames) into sync, for a
//! function with state.
//!
//! The primary's worker sends the state in CHECKPOINT frames on the
//! replication link, between its DATA frames, so each piece lies at an
//! exact place in the shard's sequence:
//!
//! 1. Round 1: every table in chunks, a few per iteration, while the shard
//!    keeps working.
//! 2. Then what changed since the round began (`changed_since`). If that
//!    is small, it goes at once, with the tables' layout and a SYNC_MARK
//!    at the current sequence boundary S — one iteration, so nothing of
//!    the shard happens in between: the state sent is the state at S. If
//!    not, it is the next round's content, sent over iterations, and the
//!    question is asked again at the end of that round — unless they did
//!    not shrink to half the round (the sessions in use are touched faster
//!    than a round takes, so rounds would never converge): then they close
//!    the checkpoint all the same if the backups, at the pace they kept
//!    during the round, install them within the hold the operator allows
//!    (`replication.checkpoint_hold_ms`), the data ports held meanwhile. While a checkpoint
//!    runs the function lists what changes (`track_changes`), so a round's
//!    end costs what changed, not a scan of its tables in one iteration
//!    (a million NAT sessions: 1.1–1.5 ms against 15–17 µs, `nat_scale`).
//! 3. The backup, from the first piece on, forgets its state, installs
//!    every chunk in order and processes no DATA until the SYNC_MARK; there
//!    it holds the primary's state at S, and follows the stream from S + 1.
//!    It is synchronized once the primary's `tx_done` covers S (nothing
//!    before S can then be owed at a takeover), and says so in its ACKs,
//!    which is how the primary learns that it is done.
//!
//! A lost piece (a gap in their numbers) or a chunk the backup cannot
//! install abandons that checkpoint on the backup; it stays unsynchronized
//! and the primary, still hearing so in its ACKs, starts another after
//! [`RETRY_NS`]. The pieces carry no acknowledgment of their own: the
//! replication link keeps their order, the numbering shows a loss, and the
//! SYNC_MARK names how many pieces there were. One checkpoint serves every
//! backup that is not synchronized; a synchronized one ignores it.

use std::collections::VecDeque;
use std::sync::atomic::Ordering::Relaxed;

use super::{ReplState, Worker};
use crate::nf::{DropReason, NetworkFunction};
use crate::replication::builder::build_marker_of;
use crate::replication::FrameType;
use crate::stats::bump;
use crate::wire::replication::{CheckpointBody, CheckpointProgress, SyncMarkBody};

/// Bytes of state per CHECKPOINT frame (with its headers, well within a
/// 1500-byte link).
pub const PIECE: usize = 1024;
/// Pieces in flight: the primary sends a round's pieces only this far ahead
/// of the slowest installing backup's ACKs. A backup installs slower than a
/// primary sends: unpaced, the pieces of a big table would overflow its
/// replication RX ring and the checkpoint would never complete. The window
/// is also how long the DATA behind the pieces waits at the backup (the
/// link keeps order): 64 pieces of 32 NAT sessions are about 2 ms of
/// installing. With 256 (8 ms) the flow-control window held a loaded
/// primary to a third of its rate while a checkpoint ran (`checkpoint`
/// benchmark: 2.2 against 7.7 Mpps; 5.9 against 8.2 with 64).
const PIECE_WINDOW: u32 = 64;
/// A backup installing a checkpoint ACKs after this many pieces (a quarter
/// of the window: the primary hears before it must stop).
const PIECES_ACK_EVERY: u32 = 16;
/// Records per chunk of round 1 (a NAT session's record is 29 bytes: one
/// chunk, one piece).
const RECORDS_PER_CHUNK: usize = 32;
/// Pieces a shard sends per iteration while a round runs: one when the
/// iteration had packets (the data ports' work comes first), more when it
/// was idle.
const PIECES_PER_BUSY_POLL: usize = 1;
const PIECES_PER_IDLE_POLL: usize = 8;
/// What changed during a round goes at once, with the SYNC_MARK, when it
/// is at most this many bytes; else it makes another round.
const FINAL_BYTES: usize = 32 * PIECE;
/// ... or, when it did not shrink to half the round's own content (the
/// sessions in use are touched faster than a round takes: every packet
/// moves a session's last-seen time, so rounds would not converge), when
/// the backups can install it within the hold allowed
/// ([`ReplSettings::checkpoint_hold_ns`]) at the pace they installed the
/// round: then it goes all the same, the data ports held until the
/// backups have it, a one-time price for a backup that could otherwise
/// never be brought into sync under that load. The default hold.
pub const CHECKPOINT_HOLD_NS: u64 = 50_000_000;
/// The pace assumed of a round too short to measure one (pieces per
/// second: a million NAT sessions a second is about 31 000).
const PACE_UNMEASURED: u64 = 20_000;
/// Rounds before a checkpoint gives up (the state changes faster than it
/// can be sent).
const MAX_ROUNDS: u32 = 16;
/// After a checkpoint (sent or abandoned), the next one waits this long:
/// the backups' ACKs must say whether the last one took.
pub const RETRY_NS: u64 = 200_000_000;
/// The closing pieces wait at most twice the hold allowed (and at least
/// this long) for room on the replication port or for the backups' ACKs,
/// the data ports held meanwhile; then the checkpoint is abandoned.
const CLOSING_MIN_NS: u64 = 10_000_000;
/// A round's pieces wait at most this long for room on the replication
/// port; then the checkpoint is abandoned.
const STALLED_MAX_NS: u64 = 1_000_000_000;
/// How often a primary without a checkpoint under way looks for a backup
/// asking for one.
const ASK_EVERY_NS: u64 = 1_000_000;
/// An unsynchronized backup's ACK counts as a request for this long.
const REQUEST_FRESH_NS: u64 = 1_000_000_000;

/// The primary's side of a checkpoint under way.
pub(crate) struct Sending {
    id: u32,
    /// Pieces sent so far (the next one's number).
    pieces: u32,
    round: u32,
    /// Bytes of the round's own content (the last round's changes; round
    /// 1: the tables), to tell whether the rounds converge.
    round_bytes: usize,
    /// When the round began (local ns) and the pieces the backups had
    /// installed then: the pace they keep.
    round_began: (u64, u32),
    /// Each table's generation when the round began.
    marks: Vec<u64>,
    /// Round 1: the table and cursor to snapshot next (None: done).
    next: Option<(usize, usize)>,
    /// Chunks still to send, the first from `offset` on.
    queue: VecDeque<Vec<u8>>,
    offset: usize,
    /// Closing since (local ns; 0: not yet): the last changes, the layout
    /// and the mark are queued at the sequence boundary the mark names, and
    /// the data ports are held until they are all out (a full replication
    /// port delays them; no DATA may come between).
    closing_since: u64,
    /// When it started (local ns).
    started_ns: u64,
    /// Since when the round has waited (for room on the replication port,
    /// or for the backups' ACKs) to send its next piece (local ns; 0: it
    /// sent the last one).
    refused_since: u64,
}

/// Why a primary abandoned a checkpoint (`ReplStatus::checkpoint_abandoned_why`
/// holds the last one's code, the cluster log says it in words).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u64)]
pub enum Abandoned {
    /// The replication port had no room, or the backups sent no progress,
    /// for [`STALLED_MAX_NS`].
    Stalled = 1,
    /// A deletion since the round began fell out of a table's bounded log.
    LogOverrun = 2,
    /// [`MAX_ROUNDS`] rounds and the changes still did not fit a close.
    NoConvergence = 3,
    /// The close held the data ports twice as long as allowed and was not
    /// out.
    CloseTooLong = 4,
}

impl Abandoned {
    const ALL: [Abandoned; 4] = [
        Abandoned::Stalled,
        Abandoned::LogOverrun,
        Abandoned::NoConvergence,
        Abandoned::CloseTooLong,
    ];

    /// The reason a status counter holds.
    pub fn from_code(code: u64) -> Option<Abandoned> {
        Self::ALL.into_iter().find(|a| *a as u64 == code)
    }

    /// In words, for the log.
    pub fn text(self) -> &'static str {
        match self {
            Abandoned::Stalled => "the replication port or the backups' progress stalled for a second",
            Abandoned::LogOverrun => "more sessions were deleted during a round than the deletion log holds",
            Abandoned::NoConvergence => {
                "traffic changes more state per round than the backups install within replication.checkpoint_hold_ms: the rounds did not converge"
            }
            Abandoned::CloseTooLong => "its close held the data ports twice replication.checkpoint_hold_ms and was not out",
        }
    }
}

impl Sending {
    /// The round cannot go on this iteration: it waits for the next (kept
    /// in `st`), unless it has waited [`STALLED_MAX_NS`] already.
    fn wait(mut self, st: &mut ReplState, now: u64) -> Result<(), Abandoned> {
        if self.refused_since == 0 {
            self.refused_since = now.max(1);
        } else if now.saturating_sub(self.refused_since) > STALLED_MAX_NS {
            return Err(Abandoned::Stalled);
        }
        st.ckpt.sending = Some(self);
        Ok(())
    }
}

/// The backup's side of a checkpoint it is installing.
pub(crate) struct Installing {
    id: u32,
    /// The next piece's number.
    next: u32,
    /// The chunk being put together from its pieces.
    partial: Vec<u8>,
}

/// A worker's checkpoint state, either side.
#[derive(Default)]
pub(crate) struct CheckpointState {
    pub sending: Option<Sending>,
    pub installing: Option<Installing>,
    /// Backup: the pieces installed as last told in an ACK.
    pub acked_pieces: u32,
    /// Primary: the next checkpoint's id, and not before when (local ns).
    pub next_id: u32,
    pub not_before_ns: u64,
}

impl CheckpointState {
    /// Backup: a checkpoint is being installed (DATA is not processed).
    #[inline]
    pub fn installing(&self) -> bool {
        self.installing.is_some()
    }

    /// Primary: the checkpoint's closing pieces are not all out, so no new
    /// ingress may take a sequence number yet.
    #[inline]
    pub fn holds_ingress(&self) -> bool {
        self.sending.as_ref().is_some_and(|c| c.closing_since != 0)
    }

    /// Backup: what its next ACK says of the checkpoint it installs.
    pub fn progress(&self) -> Option<CheckpointProgress> {
        self.installing.as_ref().map(|i| CheckpointProgress {
            id: i.id,
            pieces: i.next,
        })
    }

    /// Backup: an ACK is due to move the primary's window of pieces on.
    #[inline]
    pub fn progress_due(&self) -> bool {
        self.installing
            .as_ref()
            .is_some_and(|i| i.next >= self.acked_pieces.saturating_add(PIECES_ACK_EVERY))
    }

    /// Drops any checkpoint under way (the ids go on).
    pub fn reset(&mut self) {
        self.sending = None;
        self.installing = None;
        self.not_before_ns = 0;
    }
}

/// Why a piece was refused (each has its counter).
enum PieceRefused {
    /// Not the piece that was due: one was lost.
    OutOfOrder,
    /// Its chunk did not install.
    Install,
}

impl<F: NetworkFunction> Worker<F> {
    /// Primary, once per iteration (`busy`: it had packets): starts a
    /// checkpoint when a backup says this shard is not synchronized there,
    /// and moves one under way on.
    pub(crate) fn checkpoint_step(&mut self, st: &mut ReplState, now: u64, busy: bool) {
        if F::STATELESS {
            return;
        }
        if st.ckpt.sending.is_none() {
            if now < st.ckpt.not_before_ns {
                return;
            }
            if !self.a_backup_asks(now) {
                // Asked again in a millisecond, not on every iteration.
                st.ckpt.not_before_ns = now.saturating_add(ASK_EVERY_NS);
                return;
            }
            st.ckpt.next_id = st.ckpt.next_id.wrapping_add(1);
            self.nf.track_changes(true);
            st.ckpt.sending = Some(Sending {
                id: st.ckpt.next_id,
                pieces: 0,
                round: 1,
                round_bytes: usize::MAX,
                round_began: (now, 0),
                marks: self.nf.state_tables().iter().map(|t| t.generation()).collect(),
                next: Some((0, 0)),
                queue: VecDeque::new(),
                offset: 0,
                closing_since: 0,
                started_ns: now,
                refused_since: 0,
            });
            bump(&self.shared.repl.checkpoints_started, 1);
        }
        let budget = if busy {
            PIECES_PER_BUSY_POLL
        } else {
            PIECES_PER_IDLE_POLL
        };
        if let Err(why) = self.checkpoint_round(st, now, budget) {
            st.ckpt.sending = None;
            self.nf.track_changes(false);
            st.ckpt.not_before_ns = now.saturating_add(RETRY_NS);
            let r = &self.shared.repl;
            r.checkpoint_abandoned_why.store(why as u64, Relaxed);
            bump(&r.checkpoints_abandoned, 1);
        }
    }

    /// The hold of the data ports a checkpoint's close may cost.
    fn hold_allowed(&self) -> u64 {
        self.repl.as_ref().map_or(0, |r| r.settings.checkpoint_hold_ns)
    }

    /// How long the backups would take to install `pieces` more at the
    /// pace they kept during the round (`installed` pieces now).
    fn hold_for(&self, c: &Sending, pieces: u64, installed: u32, now: u64) -> u64 {
        let (began_ns, began_pieces) = c.round_began;
        let done = installed.saturating_sub(began_pieces) as u64;
        let took = now.saturating_sub(began_ns);
        if done < PIECES_ACK_EVERY as u64 || took == 0 {
            return pieces.saturating_mul(1_000_000_000) / PACE_UNMEASURED;
        }
        pieces.saturating_mul(took) / done
    }

    /// The pieces of checkpoint `id` the slowest backup installing it has
    /// installed, as its last ACK said.
    fn pieces_installed(&self, id: u32) -> u32 {
        self.repl
            .as_ref()
            .and_then(|r| r.signals.acks.progress(self.shard, id))
            .unwrap_or(0)
    }

    /// Whether a backup's fresh ACK says this shard is not synchronized
    /// there.
    fn a_backup_asks(&self, now: u64) -> bool {
        self.repl
            .as_ref()
            .is_some_and(|r| r.signals.acks.unsynced_fresh(self.shard, now, REQUEST_FRESH_NS))
    }

    /// One iteration's share of the checkpoint under way; an error when it
    /// must be abandoned.
    fn checkpoint_round(&mut self, st: &mut ReplState, now: u64, budget: usize) -> Result<(), Abandoned> {
        let Some(mut c) = st.ckpt.sending.take() else {
            return Ok(());
        };
        if c.closing_since != 0 {
            return self.close_checkpoint(c, st, now);
        }
        let mut sent = 0;
        let acked = self.pieces_installed(c.id);
        while sent < budget {
            if c.pieces >= acked.saturating_add(PIECE_WINDOW) {
                // A window ahead of the backups: wait for their ACKs (as
                // long as a full port would be waited for).
                return c.wait(st, now);
            }
            if c.queue.is_empty() {
                // Round 1 takes the tables chunk by chunk, as it goes.
                let Some((t, cursor)) = c.next else { break };
                let tables = self.nf.state_tables();
                let Some(table) = tables.get(t) else {
                    c.next = None;
                    continue;
                };
                let mut chunk = Vec::new();
                c.next = match table.snapshot_chunk(cursor, RECORDS_PER_CHUNK, &mut chunk) {
                    Some(at) => Some((t, at)),
                    None => Some((t + 1, 0)),
                };
                c.queue.push_back(chunk);
            }
            if !self.send_piece(&mut c, st, now) {
                // The replication port is full (the backups install slower
                // than the primary sends): the piece waits for the next
                // iteration.
                return c.wait(st, now);
            }
            c.refused_since = 0;
            sent += 1;
        }
        if !c.queue.is_empty() || c.next.is_some() {
            st.ckpt.sending = Some(c);
            return Ok(());
        }
        // The round is sent: what changed since it began?
        let tables = self.nf.state_tables();
        let mut changes = Vec::with_capacity(tables.len());
        for (t, mark) in tables.iter().zip(&c.marks) {
            // In chunks of a piece: a backup installs a big delta as it
            // comes, not all at its last piece.
            if t.changed_since_chunks(*mark, RECORDS_PER_CHUNK, &mut changes).is_none() {
                // A deletion fell out of the log: start again.
                return Err(Abandoned::LogOverrun);
            }
        }
        let bytes: usize = changes.iter().map(Vec::len).sum();
        let converging = bytes <= c.round_bytes / 2;
        let pieces: u64 = changes.iter().map(|ch| ch.len().div_ceil(PIECE).max(1) as u64).sum();
        if bytes > FINAL_BYTES && (converging || self.hold_for(&c, pieces, acked, now) > self.hold_allowed()) {
            c.round += 1;
            c.round_bytes = bytes;
            c.round_began = (now, acked);
            if c.round > MAX_ROUNDS {
                return Err(Abandoned::NoConvergence);
            }
            // The next round's changes are listed from here.
            drop(tables);
            self.nf.track_changes(true);
            c.marks = self.nf.state_tables().iter().map(|t| t.generation()).collect();
            c.queue.extend(changes);
            st.ckpt.sending = Some(c);
            return Ok(());
        }
        // The last of it, the layouts and the mark, all at this boundary.
        for t in &tables {
            let mut layout = Vec::new();
            if t.layout_chunk(&mut layout) {
                changes.push(layout);
            }
        }
        drop(tables);
        self.nf.track_changes(false);
        c.queue.extend(changes);
        c.closing_since = now.max(1);
        self.close_checkpoint(c, st, now)
    }

    /// Sends what closes the checkpoint — the last changes, the layouts,
    /// the SYNC_MARK — as far as the replication port takes them; the rest
    /// waits for the next iteration, the data ports held.
    fn close_checkpoint(&mut self, mut c: Sending, st: &mut ReplState, now: u64) -> Result<(), Abandoned> {
        // A small close goes at once (the window's room beyond a round's
        // pieces in flight); a big one as the backups install it.
        let room = self
            .pieces_installed(c.id)
            .saturating_add(PIECE_WINDOW + (FINAL_BYTES / PIECE) as u32);
        while !c.queue.is_empty() {
            if c.pieces >= room || !self.send_piece(&mut c, st, now) {
                return self.closing_waits(c, st, now);
            }
        }
        let body = SyncMarkBody {
            id: c.id,
            pieces: c.pieces,
        };
        if !self.send_checkpoint_frame(FrameType::SyncMark, &body.emit(), &[], st, now) {
            return self.closing_waits(c, st, now);
        }
        let r = &self.shared.repl;
        r.checkpoint_last_ns.store(now.saturating_sub(c.started_ns), Relaxed);
        r.checkpoint_last_rounds.store(c.round as u64, Relaxed);
        r.checkpoint_last_hold_ns
            .store(now.saturating_sub(c.closing_since), Relaxed);
        bump(&r.checkpoints_sent, 1);
        st.ckpt.not_before_ns = now.saturating_add(RETRY_NS);
        Ok(())
    }

    /// The replication port is full: the closing goes on next iteration,
    /// unless it has waited too long (false: abandoned).
    fn closing_waits(&mut self, c: Sending, st: &mut ReplState, now: u64) -> Result<(), Abandoned> {
        if now.saturating_sub(c.closing_since) > self.hold_allowed().saturating_mul(2).max(CLOSING_MIN_NS) {
            return Err(Abandoned::CloseTooLong);
        }
        st.ckpt.sending = Some(c);
        Ok(())
    }

    /// Sends the next piece of the first queued chunk.
    fn send_piece(&mut self, c: &mut Sending, st: &mut ReplState, now: u64) -> bool {
        let Some(chunk) = c.queue.front() else {
            return true;
        };
        let end = (c.offset + PIECE).min(chunk.len());
        let ends_chunk = end == chunk.len();
        let head = CheckpointBody {
            id: c.id,
            index: c.pieces,
            ends_chunk,
        };
        if !self.send_checkpoint_frame(FrameType::Checkpoint, &head.emit(), &chunk[c.offset..end], st, now) {
            return false;
        }
        c.pieces += 1;
        if ends_chunk {
            c.queue.pop_front();
            c.offset = 0;
        } else {
            c.offset = end;
        }
        true
    }

    /// A CHECKPOINT or SYNC_MARK frame at the current sequence boundary.
    fn send_checkpoint_frame(&mut self, t: FrameType, head: &[u8], piece: &[u8], st: &mut ReplState, now: u64) -> bool {
        let h = self.boundary_header(st, now);
        let Some(repl) = self.repl.as_mut() else {
            return false;
        };
        // From the packet pool: a piece does not fit a header mbuf.
        let Some(m) = build_marker_of(t, &h, &[head, piece], &repl.encap, &repl.pool) else {
            self.shared.counters.drop(DropReason::NoMbuf, 1);
            return false;
        };
        if !repl.tx.send_one(m) {
            return false;
        }
        st.last_frame_ns = now;
        st.tx_done_sent = st.tx_done;
        bump(&self.shared.repl.checkpoint_pieces, 1);
        true
    }

    /// Backup: a CHECKPOINT piece (`body` after the replication header).
    /// A synchronized shard ignores it (it is for another backup).
    pub(crate) fn on_checkpoint_piece(&mut self, body: &[u8], st: &mut ReplState) {
        let r = &self.shared.repl;
        let Some((head, piece)) = CheckpointBody::parse(body) else {
            bump(&r.malformed, 1);
            return;
        };
        if head.index == 0 {
            if st.tracker.synced() {
                return;
            }
            // A new checkpoint: whatever this shard held goes.
            self.nf.clear_state();
            st.ckpt.installing = Some(Installing {
                id: head.id,
                next: 0,
                partial: Vec::new(),
            });
            st.ckpt.acked_pieces = 0;
        }
        let Some(inst) = st.ckpt.installing.as_mut() else {
            return;
        };
        let refused = if inst.id != head.id || inst.next != head.index {
            Some(PieceRefused::OutOfOrder)
        } else {
            inst.next += 1;
            inst.partial.extend_from_slice(piece);
            if head.ends_chunk {
                let chunk = std::mem::take(&mut inst.partial);
                self.nf.install_state(&chunk).err().map(|_| PieceRefused::Install)
            } else {
                None
            }
        };
        if let Some(why) = refused {
            st.ckpt.installing = None;
            let counter = match why {
                PieceRefused::OutOfOrder => &r.checkpoint_pieces_lost,
                PieceRefused::Install => &r.checkpoint_refused,
            };
            bump(counter, 1);
        }
    }

    /// Backup: a SYNC_MARK at sequence `boundary`. When it closes the
    /// checkpoint being installed, with every piece there, the shard holds
    /// the primary's state at `boundary` and follows the stream from the
    /// next frame.
    pub(crate) fn on_sync_mark(&mut self, body: &[u8], boundary: u64, tx_done: u64, st: &mut ReplState) {
        let Some(inst) = st.ckpt.installing.take() else {
            return;
        };
        let closes = SyncMarkBody::parse(body).is_some_and(|m| m.id == inst.id && m.pieces == inst.next);
        if closes && inst.partial.is_empty() && st.tracker.join_at(boundary, tx_done) {
            bump(&self.shared.repl.checkpoints_installed, 1);
        } else {
            bump(&self.shared.repl.checkpoint_pieces_lost, 1);
        }
    }
}
