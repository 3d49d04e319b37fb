//! Failure detection, election, roles and epochs: a pure state machine.
//!
//! Inputs: heartbeats from peers ([`Machine::on_heartbeat`]), the data
//! plane's view ([`DataPlaneView`]: replication-link liveness, sync state,
//! the highest epoch seen in replication headers, worker progress) and the
//! time, on every [`Machine::tick`]. Outputs: [`Action`]s the driver carries
//! out (flip TX ownership, take over, step down, raise an alarm).
//!
//! Rules (DESIGN.md §6):
//! - A starting node listens for one dead interval; if it hears a primary it
//!   becomes a backup of it, else it takes its configured role.
//! - A backup takes over only when **both** signals are silent for the dead
//!   interval: the primary's heartbeats and the replication link. One alone
//!   raises an alarm (counted, logged) and changes nothing.
//! - Only a synchronized backup may take over; an unsynchronized one refuses
//!   (counted, logged, once per episode).
//! - Among several synchronized backups, the highest priority (then the
//!   lowest node id) takes over; the others wait and follow the new primary.
//! - Every takeover increments the epoch. A node that sees a higher epoch
//!   (heartbeat or replication header) stops being primary at once. A
//!   backup's heartbeat fences too when that backup is synchronized: it
//!   followed a takeover this primary never heard of and holds the newer
//!   sessions. An unsynchronized backup's epoch fences nobody (it could
//!   not serve in the primary's place).
//! - A primary whose workers stop making progress steps down.
//! - A planned switchover hands over to the best synchronized backup.

use std::collections::BTreeMap;

use crate::heartbeat::{Heartbeat, WireRole};

/// Static settings of the machine.
#[derive(Clone, Copy, Debug)]
pub struct MachineConfig {
    pub node_id: u32,
    pub priority: u8,
    pub heartbeat_ns: u64,
    pub dead_intervals: u32,
    /// The configured role, taken after the start-up listening period if no
    /// primary is heard.
    pub start_as: StartRole,
}

impl MachineConfig {
    pub fn dead_ns(&self) -> u64 {
        self.heartbeat_ns * self.dead_intervals as u64
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartRole {
    Primary,
    Backup,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Listening,
    Primary,
    Backup,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Listening => "listening",
            Role::Primary => "primary",
            Role::Backup => "backup",
        }
    }

    fn wire(self) -> WireRole {
        match self {
            Role::Listening => WireRole::Listening,
            Role::Primary => WireRole::Primary,
            Role::Backup => WireRole::Backup,
        }
    }
}

/// What the data plane tells the machine each tick.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DataPlaneView {
    /// When the last replication frame (DATA or KEEPALIVE) of the current
    /// epoch arrived, on the machine's clock.
    pub repl_last_rx_ns: Option<u64>,
    /// Every shard processed the primary's stream without a gap.
    pub synced: bool,
    /// Highest epoch seen in replication headers.
    pub epoch_seen: u32,
    /// A worker stopped making progress (watchdog).
    pub stalled: bool,
    /// SWITCHOVER frames naming this node arrived on every shard.
    pub switchover_received: bool,
    /// Primary: time its workers' data ports were held back by flow
    /// control, summed over the workers (it only grows).
    pub flow_held_ns: u64,
}

/// Why a node stops being (or does not become) primary.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackupReason {
    /// A primary was heard during start-up.
    PrimaryPresent,
    /// Configured as backup and no primary was heard.
    Configured,
    /// Fenced: a higher epoch was seen.
    HigherEpoch(u32),
    /// Two primaries of one epoch: the lower-ranked yields.
    OutrankedPrimary(u32),
    /// Workers stopped making progress.
    Watchdog,
    /// Planned switchover to the given backup.
    Switchover(u32),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Alarm {
    /// Heartbeats silent, replication alive.
    ManagementDown,
    /// Replication silent, heartbeats alive.
    ReplicationDown,
    /// A worker of this primary stopped making progress.
    Watchdog,
    /// The backups held this primary back (flow control) for a tenth of
    /// a second or more in the last second: they set the pair's pace, and
    /// traffic waits, or is dropped, at the primary's NIC.
    BackupBehind,
}

impl Alarm {
    pub const ALL: [Alarm; 4] = [
        Alarm::ManagementDown,
        Alarm::ReplicationDown,
        Alarm::Watchdog,
        Alarm::BackupBehind,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Alarm::ManagementDown => "management_down",
            Alarm::ReplicationDown => "replication_down",
            Alarm::Watchdog => "watchdog",
            Alarm::BackupBehind => "backup_behind",
        }
    }
}

/// How many kinds of [`Alarm`] there are.
const ALARMS: usize = Alarm::ALL.len();

/// What the driver must do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Own every TX queue. `takeover`: this node was a backup and must first
    /// replay its shadow ring and its unreplicated ingress.
    BecomePrimary {
        epoch: u32,
        takeover: bool,
    },
    /// Stop transmitting now and follow the primary of `epoch`.
    BecomeBackup {
        epoch: u32,
        reason: BackupReason,
    },
    /// Planned switchover: stop at a sequence boundary, send SWITCHOVER
    /// naming `target` on every shard, become a backup.
    HandOver {
        target: u32,
        epoch: u32,
    },
    Alarm(Alarm),
    AlarmCleared(Alarm),
    /// Both signals are gone but this backup is not synchronized.
    TakeoverRefused,
    /// This node's own control loop did not run for `ns` (descheduled, or
    /// the whole machine paused): that time does not count as the peers'
    /// silence.
    Paused {
        ns: u64,
    },
}

/// The driver ticks the machine this often.
pub const TICK_NS: u64 = 1_000_000;

/// A gap between two ticks longer than this is a pause of this node; what
/// exceeds [`TICK_NS`] of it is not counted as the peers' silence.
pub const PAUSE_MIN_NS: u64 = 2 * TICK_NS;

/// What this node knows of a peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Peer {
    pub id: u32,
    pub role: WireRole,
    pub epoch: u32,
    pub priority: u8,
    pub synced: bool,
    pub switchover_to: u32,
    pub last_heard_ns: u64,
    boot_id: u64,
    seq: u64,
}

/// The last takeover, for `show sync` and the logs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TakeoverRecord {
    pub epoch: u32,
    /// When the decision was taken.
    pub detected_ns: u64,
    /// Last heartbeat heard from the old primary.
    pub last_heartbeat_ns: u64,
    /// Last replication frame from the old primary.
    pub last_replication_ns: u64,
    /// Planned (switchover) rather than a failure.
    pub planned: bool,
}

/// The state machine.
pub struct Machine {
    cfg: MachineConfig,
    role: Role,
    epoch: u32,
    started_ns: u64,
    peers: BTreeMap<u32, Peer>,
    /// A primary was followed at some point: a backup never takes over from
    /// a primary it never saw (it could not be synchronized with it).
    seen_primary: bool,
    last_primary_hb_ns: u64,
    active_alarms: [bool; ALARMS],
    alarm_counts: [u64; ALARMS],
    /// Since when each alarm's condition has held. It is raised after two
    /// heartbeat intervals: the two signals of one failure go silent up to
    /// a heartbeat interval apart (the last heartbeat may precede the last
    /// replication frame by a whole period), and that is no alarm.
    alarm_since: [Option<u64>; ALARMS],
    /// Primary: the start of the current second of the backup watch, and
    /// the workers' held time then.
    held_mark: Option<(u64, u64)>,
    refused_episode: bool,
    /// Set when this node stepped down because its own data plane failed
    /// (watchdog) or diverged (fenced): it may not take over again until it
    /// restarts (or, with the checkpoint protocol, resyncs).
    ineligible: bool,
    pub takeovers: u64,
    pub takeovers_refused: u64,
    pub step_downs: u64,
    pub heartbeats_rejected: u64,
    last_takeover: Option<TakeoverRecord>,
    /// Planned switchover in progress: (target, epoch we handed over in,
    /// since when).
    handing_over: Option<(u32, u32, u64)>,
    last_tick_ns: Option<u64>,
    /// Recent stretches when this node's own control loop did not run:
    /// (end, length) in ns, oldest first. A peer cannot be heard while this
    /// node is not running, so a pause is not the peer's silence: after a
    /// pause of the whole machine both nodes resume, and the backup must
    /// not take over before the primary had its turn to speak.
    pauses: std::collections::VecDeque<(u64, u64)>,
    pub pauses_detected: u64,
    pub longest_pause_ns: u64,
}

impl Machine {
    pub fn new(cfg: MachineConfig, now_ns: u64) -> Machine {
        Machine {
            cfg,
            role: Role::Listening,
            epoch: 0,
            started_ns: now_ns,
            peers: BTreeMap::new(),
            seen_primary: false,
            last_primary_hb_ns: 0,
            active_alarms: [false; ALARMS],
            alarm_counts: [0; ALARMS],
            alarm_since: [None; ALARMS],
            held_mark: None,
            refused_episode: false,
            ineligible: false,
            takeovers: 0,
            takeovers_refused: 0,
            step_downs: 0,
            heartbeats_rejected: 0,
            last_takeover: None,
            handing_over: None,
            last_tick_ns: None,
            pauses: std::collections::VecDeque::new(),
            pauses_detected: 0,
            longest_pause_ns: 0,
        }
    }

    pub fn role(&self) -> Role {
        self.role
    }

    pub fn epoch(&self) -> u32 {
        self.epoch
    }

    pub fn config(&self) -> &MachineConfig {
        &self.cfg
    }

    pub fn peers(&self) -> impl Iterator<Item = &Peer> {
        self.peers.values()
    }

    pub fn last_takeover(&self) -> Option<TakeoverRecord> {
        self.last_takeover
    }

    /// When a backup's next tick would find its primary's two signals
    /// silent for the dead interval, if nothing more arrives: the driver
    /// ticks then rather than up to a tick later (at `heartbeat_ms = 1`,
    /// a third of the dead interval). `None` when no takeover can be
    /// near: not a backup, or no primary heard yet. A deadline already
    /// past means: tick now. (This node's pauses only push the real one
    /// later, so ticking at this one is never late, at worst early.)
    pub fn takeover_deadline(&self, dp: &DataPlaneView) -> Option<u64> {
        if self.role != Role::Backup || !self.seen_primary || self.handing_over.is_some() {
            return None;
        }
        let heartbeat = self
            .peers
            .values()
            .filter(|p| p.role == WireRole::Primary)
            .map(|p| p.last_heard_ns)
            .max();
        let last = heartbeat.into_iter().chain(dp.repl_last_rx_ns).max()?;
        // Fresh while the silence is at most the dead interval.
        Some(last.saturating_add(self.cfg.dead_ns()).saturating_add(1))
    }

    /// Whether this node may take over (synchronized data plane assumed).
    pub fn eligible(&self) -> bool {
        !self.ineligible
    }

    pub fn alarm_count(&self, a: Alarm) -> u64 {
        self.alarm_counts[a as usize]
    }

    pub fn alarm_active(&self, a: Alarm) -> bool {
        self.active_alarms[a as usize]
    }

    /// Takes a verified heartbeat. Returns false for a replay (not newer
    /// than the last one from that node) or our own reflection.
    pub fn on_heartbeat(&mut self, hb: &Heartbeat, now_ns: u64) -> bool {
        if hb.node_id == self.cfg.node_id {
            self.heartbeats_rejected += 1;
            return false;
        }
        if let Some(p) = self.peers.get(&hb.node_id) {
            if (hb.boot_id, hb.seq) <= (p.boot_id, p.seq) {
                self.heartbeats_rejected += 1;
                return false;
            }
        }
        self.peers.insert(
            hb.node_id,
            Peer {
                id: hb.node_id,
                role: hb.role,
                epoch: hb.epoch,
                priority: hb.priority,
                synced: hb.synced,
                switchover_to: hb.switchover_to,
                last_heard_ns: now_ns,
                boot_id: hb.boot_id,
                seq: hb.seq,
            },
        );
        true
    }

    /// The heartbeat this node sends now.
    pub fn heartbeat(&self, boot_id: u64, seq: u64, synced: bool) -> Heartbeat {
        Heartbeat {
            node_id: self.cfg.node_id,
            role: self.role.wire(),
            epoch: self.epoch,
            priority: self.cfg.priority,
            synced: match self.role {
                Role::Primary => true,
                _ => synced && !self.ineligible,
            },
            boot_id,
            seq,
            switchover_to: self.handing_over.map(|h| h.0).unwrap_or(0),
        }
    }

    fn fresh(&self, t: u64, now: u64) -> bool {
        self.silence(t, now) <= self.cfg.dead_ns()
    }

    /// How long a peer last heard at `t` has been silent while this node
    /// was running: the time since `t`, less this node's pauses after `t`.
    pub fn silence(&self, t: u64, now: u64) -> u64 {
        let paused: u64 = self
            .pauses
            .iter()
            .filter(|(end, _)| *end > t)
            .map(|(end, len)| (*len).min(end - t))
            .sum();
        now.saturating_sub(t).saturating_sub(paused)
    }

    /// Notes a pause of this node's control loop since the last tick.
    fn note_pause(&mut self, now: u64, out: &mut Vec<Action>) {
        if let Some(prev) = self.last_tick_ns {
            let gap = now.saturating_sub(prev);
            if gap > PAUSE_MIN_NS {
                let len = gap - TICK_NS;
                self.pauses.push_back((now, len));
                self.pauses_detected += 1;
                self.longest_pause_ns = self.longest_pause_ns.max(len);
                out.push(Action::Paused { ns: len });
            }
        }
        self.last_tick_ns = Some(now);
        let keep = 10 * self.cfg.dead_ns().max(PAUSE_MIN_NS);
        while self
            .pauses
            .front()
            .is_some_and(|(end, _)| now.saturating_sub(*end) > keep)
        {
            self.pauses.pop_front();
        }
    }

    /// (priority, lower id first): the election order.
    fn rank(priority: u8, id: u32) -> (u8, std::cmp::Reverse<u32>) {
        (priority, std::cmp::Reverse(id))
    }

    /// The live primary peer with the highest epoch.
    fn live_primary(&self, now: u64) -> Option<Peer> {
        self.peers
            .values()
            .filter(|p| p.role == WireRole::Primary && self.fresh(p.last_heard_ns, now))
            .max_by_key(|p| (p.epoch, Self::rank(p.priority, p.id)))
            .copied()
    }

    fn max_epoch_known(&self, dp: &DataPlaneView) -> u32 {
        self.peers
            .values()
            .map(|p| p.epoch)
            .chain([self.epoch, dp.epoch_seen])
            .max()
            .unwrap_or(0)
    }

    fn set_alarm(&mut self, a: Alarm, on: bool, out: &mut Vec<Action>) {
        let i = a as usize;
        if on && !self.active_alarms[i] {
            self.active_alarms[i] = true;
            self.alarm_counts[i] += 1;
            out.push(Action::Alarm(a));
        } else if !on && self.active_alarms[i] {
            self.active_alarms[i] = false;
            out.push(Action::AlarmCleared(a));
        }
    }

    /// Raises `a` once its condition held for a whole dead interval; clears
    /// it as soon as the condition ends. When a primary dies, its two
    /// signals stop a little apart: the last heartbeat may precede the last
    /// replication frame by a period, and a busy primary's worker may have
    /// been descheduled for a while before the end, its heartbeats (sent by
    /// a real-time thread) going on. Only a signal that stays alone for a
    /// further dead interval points at a broken link. (Two heartbeat
    /// intervals were not enough: a 2-core test host showed such alarms.)
    fn debounced_alarm(&mut self, a: Alarm, cond: bool, now: u64, out: &mut Vec<Action>) {
        let i = a as usize;
        if !cond {
            self.alarm_since[i] = None;
            self.set_alarm(a, false, out);
            return;
        }
        let since = *self.alarm_since[i].get_or_insert(now);
        if now.saturating_sub(since) >= self.cfg.dead_ns() {
            self.set_alarm(a, true, out);
        }
    }

    fn become_backup(&mut self, epoch: u32, reason: BackupReason, out: &mut Vec<Action>) {
        if self.role == Role::Primary {
            self.step_downs += 1;
        }
        if matches!(
            reason,
            BackupReason::Watchdog | BackupReason::HigherEpoch(_) | BackupReason::OutrankedPrimary(_)
        ) {
            self.ineligible = true;
        }
        self.role = Role::Backup;
        self.epoch = self.epoch.max(epoch);
        // A backup is not held back by anybody.
        self.held_mark = None;
        self.set_alarm(Alarm::BackupBehind, false, out);
        out.push(Action::BecomeBackup {
            epoch: self.epoch,
            reason,
        });
    }

    fn take_over(&mut self, now: u64, dp: &DataPlaneView, planned: bool, out: &mut Vec<Action>) {
        let epoch = self.max_epoch_known(dp) + 1;
        self.last_takeover = Some(TakeoverRecord {
            epoch,
            detected_ns: now,
            last_heartbeat_ns: self.last_primary_hb_ns,
            last_replication_ns: dp.repl_last_rx_ns.unwrap_or(0),
            planned,
        });
        self.role = Role::Primary;
        self.epoch = epoch;
        self.takeovers += 1;
        self.handing_over = None;
        self.refused_episode = false;
        for a in [Alarm::ManagementDown, Alarm::ReplicationDown] {
            self.alarm_since[a as usize] = None;
            self.set_alarm(a, false, out);
        }
        out.push(Action::BecomePrimary { epoch, takeover: true });
    }

    /// Advances the machine to `now`.
    pub fn tick(&mut self, now: u64, dp: &DataPlaneView) -> Vec<Action> {
        let mut out = Vec::new();
        self.note_pause(now, &mut out);
        let primary = self.live_primary(now);
        if let Some(p) = primary {
            self.last_primary_hb_ns = p.last_heard_ns;
        }
        match self.role {
            Role::Listening => {
                if let Some(p) = primary {
                    self.seen_primary = true;
                    self.become_backup(p.epoch, BackupReason::PrimaryPresent, &mut out);
                } else if now.saturating_sub(self.started_ns) >= self.cfg.dead_ns() {
                    match self.cfg.start_as {
                        StartRole::Primary => {
                            self.role = Role::Primary;
                            self.epoch = self.max_epoch_known(dp) + 1;
                            out.push(Action::BecomePrimary {
                                epoch: self.epoch,
                                takeover: false,
                            });
                        }
                        StartRole::Backup => self.become_backup(self.epoch, BackupReason::Configured, &mut out),
                    }
                }
            }
            Role::Primary => self.tick_primary(now, dp, primary, &mut out),
            Role::Backup => self.tick_backup(now, dp, primary, &mut out),
        }
        out
    }

    fn tick_primary(&mut self, now: u64, dp: &DataPlaneView, primary: Option<Peer>, out: &mut Vec<Action>) {
        let higher = primary.map(|p| p.epoch).unwrap_or(0).max(dp.epoch_seen);
        if higher > self.epoch {
            self.become_backup(higher, BackupReason::HigherEpoch(higher), out);
            return;
        }
        if let Some(p) = primary {
            if p.epoch == self.epoch && Self::rank(p.priority, p.id) > Self::rank(self.cfg.priority, self.cfg.node_id) {
                self.become_backup(p.epoch, BackupReason::OutrankedPrimary(p.id), out);
                return;
            }
        }
        // A synchronized backup of a higher epoch followed a primary this
        // one never heard of (it was cut off, or started without hearing
        // anybody): that backup holds the newer sessions, and ignores this
        // primary's older stream; while this one goes on as primary, it
        // would never take over. An unsynchronized backup's epoch fences
        // nobody: it could not serve in this one's place.
        let newer = self
            .peers
            .values()
            .filter(|p| {
                p.role == WireRole::Backup && p.synced && p.epoch > self.epoch && self.fresh(p.last_heard_ns, now)
            })
            .map(|p| p.epoch)
            .max();
        if let Some(epoch) = newer {
            self.become_backup(epoch, BackupReason::HigherEpoch(epoch), out);
            return;
        }
        if dp.stalled {
            self.set_alarm(Alarm::Watchdog, true, out);
            self.become_backup(self.epoch, BackupReason::Watchdog, out);
            return;
        }
        self.watch_backups(now, dp.flow_held_ns, out);
    }

    /// Each second as primary: [`Alarm::BackupBehind`] when flow control
    /// held the data ports back for a tenth of it or more; cleared after a
    /// second with less than a hundredth.
    fn watch_backups(&mut self, now: u64, held_ns: u64, out: &mut Vec<Action>) {
        const SECOND: u64 = 1_000_000_000;
        let (since, held_then) = *self.held_mark.get_or_insert((now, held_ns));
        let span = now.saturating_sub(since);
        if span < SECOND {
            return;
        }
        self.held_mark = Some((now, held_ns));
        let held = held_ns.saturating_sub(held_then);
        if held.saturating_mul(10) >= span {
            self.set_alarm(Alarm::BackupBehind, true, out);
        } else if held.saturating_mul(100) < span {
            self.set_alarm(Alarm::BackupBehind, false, out);
        }
    }

    fn tick_backup(&mut self, now: u64, dp: &DataPlaneView, primary: Option<Peer>, out: &mut Vec<Action>) {
        if let Some(p) = primary {
            self.seen_primary = true;
            self.epoch = self.epoch.max(p.epoch);
        }
        if dp.epoch_seen > self.epoch {
            self.epoch = dp.epoch_seen;
        }
        if !dp.stalled {
            self.set_alarm(Alarm::Watchdog, false, out);
        }
        if dp.switchover_received && dp.synced {
            self.take_over(now, dp, true, out);
            return;
        }
        if let Some((_, epoch, since)) = self.handing_over {
            // We handed over: wait for the new primary (a higher epoch) rather
            // than take back; if none shows up for ten dead intervals, the
            // usual rules apply again (this node may take over itself).
            let done = self.epoch > epoch;
            let expired = now.saturating_sub(since) > 10 * self.cfg.dead_ns();
            if done || expired {
                self.handing_over = None;
            } else {
                return;
            }
        }
        if !self.seen_primary {
            return;
        }
        let hb_alive = primary.is_some();
        let repl_alive = dp.repl_last_rx_ns.is_some_and(|t| self.fresh(t, now));
        self.debounced_alarm(Alarm::ManagementDown, !hb_alive && repl_alive, now, out);
        self.debounced_alarm(Alarm::ReplicationDown, hb_alive && !repl_alive, now, out);
        if hb_alive || repl_alive {
            self.refused_episode = false;
            return;
        }
        // Both signals silent for the dead interval: the primary is gone.
        if !dp.synced || self.ineligible {
            if !self.refused_episode {
                self.refused_episode = true;
                self.takeovers_refused += 1;
                out.push(Action::TakeoverRefused);
            }
            return;
        }
        let me = Self::rank(self.cfg.priority, self.cfg.node_id);
        let outranked = self.peers.values().any(|p| {
            p.role == WireRole::Backup
                && p.synced
                && self.fresh(p.last_heard_ns, now)
                && Self::rank(p.priority, p.id) > me
        });
        if !outranked {
            self.take_over(now, dp, false, out);
        }
    }

    /// Operator's planned switchover (on the primary): hands over to the
    /// best live synchronized backup.
    pub fn switchover(&mut self, now: u64) -> Result<Action, String> {
        if self.role != Role::Primary {
            return Err(format!("this node is {}, not primary", self.role.name()));
        }
        let target = self
            .peers
            .values()
            .filter(|p| p.role == WireRole::Backup && p.synced && self.fresh(p.last_heard_ns, now))
            .max_by_key(|p| Self::rank(p.priority, p.id))
            .map(|p| p.id)
            .ok_or_else(|| "no live synchronized backup to hand over to".to_string())?;
        self.role = Role::Backup;
        self.step_downs += 1;
        self.seen_primary = true;
        self.handing_over = Some((target, self.epoch, now));
        Ok(Action::HandOver {
            target,
            epoch: self.epoch,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    fn cfg(id: u32, priority: u8, start_as: StartRole) -> MachineConfig {
        MachineConfig {
            node_id: id,
            priority,
            heartbeat_ns: 10 * MS,
            dead_intervals: 3,
            start_as,
        }
    }

    fn hb(id: u32, role: WireRole, epoch: u32, seq: u64) -> Heartbeat {
        Heartbeat {
            node_id: id,
            role,
            epoch,
            priority: 100,
            synced: true,
            boot_id: 1,
            seq,
            switchover_to: 0,
        }
    }

    /// A lone primary at 30 ms.
    fn lone_primary() -> Machine {
        let mut m = Machine::new(cfg(1, 100, StartRole::Primary), 0);
        for t in 0..=30 {
            m.tick(t * MS, &DataPlaneView::default());
        }
        assert_eq!(m.role(), Role::Primary);
        m
    }

    /// Ticks every millisecond (as the driver does) after `from` up to
    /// `to` (ms) while the workers' held time is `held` ms; what the
    /// machine did.
    fn run(m: &mut Machine, from: u64, to: u64, held: u64) -> Vec<Action> {
        let dp = DataPlaneView {
            flow_held_ns: held * MS,
            ..Default::default()
        };
        (from + 1..=to).flat_map(|t| m.tick(t * MS, &dp)).collect()
    }

    #[test]
    fn a_primary_held_back_a_tenth_of_a_second_raises_backup_behind_and_a_quiet_second_clears_it() {
        let mut m = lone_primary();
        let first = run(&mut m, 30, 40, 0);
        assert!(first.is_empty(), "{first:?}");
        // 99 ms held in the first second: no alarm.
        assert!(run(&mut m, 40, 1040, 99).is_empty());
        // 100 ms in the next one.
        assert_eq!(run(&mut m, 1040, 2040, 199), vec![Action::Alarm(Alarm::BackupBehind)]);
        // 50 ms: between the two thresholds, it stays.
        assert!(run(&mut m, 2040, 3040, 249).is_empty());
        assert!(m.alarm_active(Alarm::BackupBehind));
        // 9 ms: cleared.
        assert_eq!(
            run(&mut m, 3040, 4040, 258),
            vec![Action::AlarmCleared(Alarm::BackupBehind)]
        );
        assert_eq!(m.alarm_count(Alarm::BackupBehind), 1);
    }

    #[test]
    fn a_primary_that_steps_down_clears_backup_behind() {
        let mut m = lone_primary();
        run(&mut m, 30, 40, 0);
        run(&mut m, 40, 1040, 500);
        assert!(m.alarm_active(Alarm::BackupBehind));
        let out = m.tick(
            1050 * MS,
            &DataPlaneView {
                epoch_seen: 9,
                flow_held_ns: 500 * MS,
                ..Default::default()
            },
        );
        assert!(out.contains(&Action::AlarmCleared(Alarm::BackupBehind)), "{out:?}");
        assert!(!m.alarm_active(Alarm::BackupBehind));
    }

    #[test]
    fn a_lone_primary_takes_its_role_after_one_dead_interval_with_epoch_one() {
        let mut m = Machine::new(cfg(1, 100, StartRole::Primary), 0);
        assert!(m.tick(29 * MS, &DataPlaneView::default()).is_empty());
        assert_eq!(
            m.tick(30 * MS, &DataPlaneView::default()),
            vec![Action::BecomePrimary {
                epoch: 1,
                takeover: false
            }]
        );
    }

    #[test]
    fn a_starting_primary_that_hears_a_primary_becomes_its_backup() {
        let mut m = Machine::new(cfg(1, 100, StartRole::Primary), 0);
        assert!(m.on_heartbeat(&hb(2, WireRole::Primary, 4, 1), 5 * MS));
        assert_eq!(
            m.tick(6 * MS, &DataPlaneView::default()),
            vec![Action::BecomeBackup {
                epoch: 4,
                reason: BackupReason::PrimaryPresent
            }]
        );
    }

    #[test]
    fn a_backup_ticked_at_its_takeover_deadline_takes_over_then_and_not_a_nanosecond_before() {
        let mut m = Machine::new(cfg(2, 100, StartRole::Backup), 0);
        assert!(m.on_heartbeat(&hb(1, WireRole::Primary, 1, 1), 5 * MS));
        let mut dp = DataPlaneView {
            synced: true,
            repl_last_rx_ns: Some(5 * MS),
            ..Default::default()
        };
        m.tick(6 * MS, &dp);
        assert_eq!(m.role(), Role::Backup);
        // The replication frame came last: the deadline follows it.
        assert!(m.on_heartbeat(&hb(1, WireRole::Primary, 1, 2), 7 * MS));
        dp.repl_last_rx_ns = Some(7 * MS + 400_000);
        let deadline = m.takeover_deadline(&dp).expect("a deadline");
        assert_eq!(deadline, 37 * MS + 400_001);
        // The driver's ticks every millisecond, then one just before.
        for t in 8..=37 {
            assert!(m.tick(t * MS, &dp).is_empty(), "alive at {t} ms");
        }
        assert!(m.tick(deadline - 1, &dp).is_empty(), "alive until then");
        assert_eq!(m.takeover_deadline(&dp), Some(deadline));
        assert!(m.tick(deadline, &dp).contains(&Action::BecomePrimary {
            epoch: 2,
            takeover: true
        }));
        assert_eq!(m.takeover_deadline(&dp), None, "a primary has no takeover to watch for");
    }

    #[test]
    fn replayed_heartbeats_are_rejected() {
        let mut m = Machine::new(cfg(1, 100, StartRole::Backup), 0);
        assert!(m.on_heartbeat(&hb(2, WireRole::Primary, 1, 5), 0));
        assert!(!m.on_heartbeat(&hb(2, WireRole::Primary, 1, 5), 1));
        assert!(!m.on_heartbeat(&hb(2, WireRole::Primary, 1, 4), 1));
        assert!(!m.on_heartbeat(&hb(1, WireRole::Primary, 9, 100), 1), "own id");
        assert_eq!(m.heartbeats_rejected, 3);
    }

    #[test]
    fn switchover_without_a_synchronized_backup_is_refused() {
        let mut m = Machine::new(cfg(1, 100, StartRole::Primary), 0);
        m.tick(30 * MS, &DataPlaneView::default());
        let mut b = hb(2, WireRole::Backup, 1, 1);
        b.synced = false;
        m.on_heartbeat(&b, 31 * MS);
        assert!(m.switchover(32 * MS).is_err());
        assert_eq!(m.role(), Role::Primary);
    }
}
