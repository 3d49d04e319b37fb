//! What a worker tells the control thread about replication, as single-writer
//! atomics (the worker stores, everyone else loads).

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering::Relaxed};

use super::{NetworkFunction, ReplState, Worker};

/// A replicating worker's mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Primary,
    Backup,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Primary => "primary",
            Mode::Backup => "backup",
        }
    }
}

/// Replication state and counters of one worker.
#[derive(Default)]
pub struct ReplStatus {
    /// Loop iterations (the watchdog's progress counter).
    pub loops: AtomicU64,
    /// 0 = standalone, 1 = primary, 2 = backup.
    pub mode: AtomicU8,
    pub epoch: AtomicU32,
    /// Primary: last sequence assigned. Backup: last sequence processed.
    pub last_seq: AtomicU64,
    /// Primary: its own. Backup: the highest heard.
    pub tx_done: AtomicU64,
    pub synced: AtomicBool,
    /// Backup of a stateless function that started late or missed frames:
    /// the sequence it last joined the stream at (0: it followed from
    /// sequence 1, or has not joined yet).
    pub joined_at: AtomicU64,
    /// Joined, waiting for the primary's `tx_done` to cover what came
    /// before.
    pub joining: AtomicBool,
    pub gaps: AtomicU64,
    pub missing: AtomicU64,
    pub old_frames: AtomicU64,
    pub stale_epoch: AtomicU64,
    pub malformed: AtomicU64,
    pub foreign: AtomicU64,
    pub steered: AtomicU64,
    pub steer_drops: AtomicU64,
    pub frames_tx: AtomicU64,
    pub keepalives_tx: AtomicU64,
    pub frames_rx: AtomicU64,
    pub keepalives_rx: AtomicU64,
    /// Local ns of the last frame of the followed epoch (0 = none).
    pub last_rx_ns: AtomicU64,
    pub epoch_seen: AtomicU32,
    pub shadow_len: AtomicU64,
    pub shadow_overflow: AtomicU64,
    /// Batch frames the shadow ring's in-place egress holds (mbufs of the
    /// packet pool, one per batch, not per packet).
    pub shadow_frames: AtomicU64,
    pub window_len: AtomicU64,
    pub window_evicted: AtomicU64,
    /// SWITCHOVER naming this node id arrived on this shard (0 = none).
    pub switchover_for: AtomicU32,
    /// The last takeover: shadow entries resent, unreplicated packets
    /// processed, whether every port's anchor was found, first egress (ns).
    pub takeover_replayed: AtomicU64,
    pub takeover_unreplicated: AtomicU64,
    /// Replicas that came before their own copy, or whose copy this backup
    /// never saw (its RX dropped it).
    pub window_unmatched: AtomicU64,
    pub takeover_first_egress_ns: AtomicU64,
    pub takeover_done_ns: AtomicU64,
    pub announcements: AtomicU64,
    /// Primary: AUDITs sent. Backup: AUDITs compared, and how many found
    /// this shard's state different from the primary's.
    pub audits: AtomicU64,
    pub audit_mismatches: AtomicU64,
    /// The checkpoint protocol (`worker::checkpoint`). Primary: started,
    /// sent whole (up to their SYNC_MARK), abandoned, pieces sent. Backup:
    /// installed, abandoned for a lost piece (or a mark that did not close
    /// them), chunks refused.
    pub checkpoints_started: AtomicU64,
    pub checkpoints_sent: AtomicU64,
    pub checkpoints_abandoned: AtomicU64,
    pub checkpoint_pieces: AtomicU64,
    pub checkpoints_installed: AtomicU64,
    pub checkpoint_pieces_lost: AtomicU64,
    pub checkpoint_refused: AtomicU64,
    /// Primary: the last checkpoint sent whole: how long from its start to
    /// its SYNC_MARK, in how many rounds,
    pub checkpoint_last_ns: AtomicU64,
    pub checkpoint_last_rounds: AtomicU64,
    /// ... and how long its closing held the data ports.
    pub checkpoint_last_hold_ns: AtomicU64,
    /// Primary: why the last abandoned checkpoint was
    /// (`checkpoint::Abandoned` as a number; 0: none yet).
    pub checkpoint_abandoned_why: AtomicU64,
    /// Flow control. Primary: ACKs read, records the slowest fresh
    /// synchronized backup is behind, time its data ports were held back
    /// (the backups were a window behind). Backup: ACKs sent, and other
    /// backups' ACKs read (and ignored).
    pub acks_rx: AtomicU64,
    pub acks_tx: AtomicU64,
    pub flow_lag: AtomicU64,
    pub flow_held_ns: AtomicU64,
}

impl ReplStatus {
    pub fn mode(&self) -> Option<Mode> {
        match self.mode.load(Relaxed) {
            1 => Some(Mode::Primary),
            2 => Some(Mode::Backup),
            _ => None,
        }
    }
}

impl<F: NetworkFunction> Worker<F> {
    /// Publishes the replication state (a handful of relaxed stores).
    pub(crate) fn publish(&self, st: &ReplState) {
        let r = &self.shared.repl;
        r.mode.store(if st.mode == Mode::Primary { 1 } else { 2 }, Relaxed);
        r.epoch.store(st.epoch, Relaxed);
        match st.mode {
            Mode::Primary => {
                r.last_seq.store(st.next_seq, Relaxed);
                r.tx_done.store(st.tx_done, Relaxed);
            }
            Mode::Backup => {
                r.last_seq.store(st.tracker.last(), Relaxed);
                r.tx_done.store(st.tx_done_seen, Relaxed);
            }
        }
        r.synced.store(st.tracker.synced(), Relaxed);
        r.joined_at.store(st.tracker.joined_at, Relaxed);
        r.joining.store(st.tracker.joining(), Relaxed);
        r.gaps.store(st.tracker.gaps, Relaxed);
        r.missing.store(st.tracker.missing, Relaxed);
        r.old_frames.store(st.tracker.old, Relaxed);
        r.shadow_len.store(st.shadow.len() as u64, Relaxed);
        r.shadow_overflow.store(st.shadow.overflow, Relaxed);
        r.shadow_frames.store(st.held.len() as u64, Relaxed);
        r.window_len
            .store((st.windows[0].len() + st.windows[1].len()) as u64, Relaxed);
        r.window_evicted
            .store(st.windows[0].evicted + st.windows[1].evicted, Relaxed);
        r.window_unmatched
            .store(st.windows[0].unmatched + st.windows[1].unmatched, Relaxed);
        r.switchover_for.store(st.switchover_for, Relaxed);
        r.flow_lag.store(st.flow_lag, Relaxed);
        r.flow_held_ns.store(st.flow_held_ns, Relaxed);
        r.acks_tx.store(st.acks_tx, Relaxed);
    }
}
