//! The control thread's side of replication: the failure-detection state
//! machine and its heartbeat link, fed with what the workers report, and the
//! actions it returns carried out on the data plane (TX ownership, worker
//! commands). Ticked by the main loop every millisecond.

use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use crossbeam::channel::Sender;

use control::machine::{
    Action, Alarm, BackupReason, DataPlaneView, Machine, MachineConfig, Peer, Role, StartRole, TakeoverRecord, TICK_NS,
};
use control::udp::{HeartbeatLink, LinkCounters};
use dataplane::clock::TscClock;
use dataplane::replication::flow::AckEntry;
use dataplane::worker::{NodeSignals, WorkerCmd};

use crate::config::{self, Config};
use crate::node::NodeView;

/// A copy of the control plane's state for the prompt and telemetry.
#[derive(Clone, Debug)]
pub struct ClusterStatus {
    pub role: Role,
    pub epoch: u32,
    pub eligible: bool,
    pub peers: Vec<(Peer, u64)>,
    pub alarms: Vec<(Alarm, u64, bool)>,
    pub takeovers: u64,
    pub takeovers_refused: u64,
    pub step_downs: u64,
    pub heartbeats_rejected: u64,
    pub link: LinkCounters,
    pub last_takeover: Option<TakeoverTimeline>,
    pub heartbeat_ms: u32,
    pub dead_ms: u64,
    /// The control thread's SCHED_FIFO priority (None: normal scheduling).
    pub control_rt_priority: Option<u8>,
    /// Pauses of the control loop seen, and the longest (ns).
    pub pauses: (u64, u64),
    /// Flow control: each backup's last ACK per shard, as this node heard
    /// it (a primary's view).
    pub backups: Vec<BackupHeard>,
}

/// A backup's last ACK of one shard.
#[derive(Clone, Copy, Debug)]
pub struct BackupHeard {
    pub shard: u16,
    pub ack: AckEntry,
    /// Records the shard's last sequence is ahead of it.
    pub lag: u64,
    /// How long ago it arrived (ns).
    pub age_ns: u64,
}

/// A takeover as it happened, in ns on this node's clock.
#[derive(Clone, Copy, Debug)]
pub struct TakeoverTimeline {
    pub record: TakeoverRecord,
    /// First packet the new primary transmitted, of any kind: a shadow
    /// entry resent, an unreplicated packet, or new ingress (0 = none yet).
    pub first_egress_ns: u64,
    pub replayed: u64,
    pub unreplicated: u64,
    /// Window copies evicted before their replica came (0: the window saw
    /// everything it had to).
    pub window_evicted: u64,
    pub done: bool,
}

pub struct Cluster {
    machine: Machine,
    link: HeartbeatLink,
    clock: TscClock,
    view: Arc<NodeView>,
    signals: Arc<NodeSignals>,
    commands: Vec<Sender<WorkerCmd>>,
    /// Per worker: loop counter and when it last moved (the watchdog).
    progress: Vec<(u64, u64)>,
    watchdog_ns: u64,
    timeline: Option<TakeoverTimeline>,
    /// Ownership is dropped one tick after a hand-over, once the workers
    /// stopped at their sequence boundary (dropping it at once would free
    /// the egress of a burst already replicated).
    release_ownership_at: Option<u64>,
    control_rt_priority: Option<u8>,
    /// When the machine would declare the primary dead (its clock), as of
    /// the last tick: the next tick comes then if that is sooner than a
    /// tick period.
    takeover_deadline: Option<u64>,
    /// Per worker: its shard's synchronization as last logged (a backup's
    /// changes are told in the log, once each).
    shard_synced: Vec<ShardSync>,
    /// Per worker: the checkpoints its shard had sent whole, and had
    /// abandoned, when last told.
    checkpoints_told: Vec<(u64, u64)>,
    /// The epoch of the primary this backup was last said to follow.
    followed_epoch: u32,
}

/// A backup shard's synchronization, as last logged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ShardSync {
    Synced,
    /// Synchronized since it joined a stateless function's stream at this
    /// sequence.
    Joined(u64),
    /// A stateless function's late start, not yet covered by `tx_done`.
    Joining,
    Lost,
}

impl Cluster {
    pub fn new(
        cfg: &Config,
        view: Arc<NodeView>,
        signals: Arc<NodeSignals>,
        commands: Vec<Sender<WorkerCmd>>,
    ) -> Result<Cluster, String> {
        let m = &cfg.management;
        let local: SocketAddr = m
            .address
            .as_deref()
            .and_then(|a| a.parse().ok())
            .ok_or_else(|| "management.address: missing or invalid".to_string())?;
        let peers: Vec<SocketAddr> = m.peers.iter().filter_map(|p| p.parse().ok()).collect();
        let key = m
            .key
            .as_deref()
            .and_then(control::heartbeat::parse_key)
            .ok_or("management.key: missing or invalid")?;
        let clock = TscClock::system();
        let now = clock.now_ns();
        let shards = view.workers.len();
        // Wall-clock start time: grows across restarts of this node, which is
        // what the peers' replay check needs.
        let boot_id = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(now);
        let link =
            HeartbeatLink::bind(local, peers, key, boot_id).map_err(|e| format!("management.address {local}: {e}"))?;
        let machine = Machine::new(
            MachineConfig {
                node_id: cfg.node.id,
                priority: cfg.node.priority,
                heartbeat_ns: m.heartbeat_ms as u64 * 1_000_000,
                dead_intervals: m.dead_intervals,
                start_as: match cfg.node.role {
                    config::Role::Primary => StartRole::Primary,
                    _ => StartRole::Backup,
                },
            },
            now,
        );
        let progress = vec![(0, now); view.workers.len()];
        Ok(Cluster {
            machine,
            link,
            clock,
            view,
            signals,
            commands,
            progress,
            watchdog_ns: (m.watchdog_ms as u64 * 1_000_000)
                .max(m.heartbeat_ms as u64 * m.dead_intervals as u64 * 1_000_000),
            timeline: None,
            takeover_deadline: None,
            shard_synced: vec![ShardSync::Synced; shards],
            checkpoints_told: vec![(0, 0); shards],
            followed_epoch: 0,
            release_ownership_at: None,
            control_rt_priority: None,
        })
    }

    /// What the workers report, as the machine wants it.
    fn dataplane_view(&mut self, now: u64) -> DataPlaneView {
        let mut v = DataPlaneView {
            synced: true,
            switchover_received: !self.view.workers.is_empty(),
            epoch_seen: self.signals.fence_epoch.load(Relaxed),
            ..Default::default()
        };
        let me = self.machine.config().node_id;
        for (i, w) in self.view.workers.iter().enumerate() {
            let r = &w.repl;
            let last = r.last_rx_ns.load(Relaxed);
            if last != 0 {
                v.repl_last_rx_ns = Some(v.repl_last_rx_ns.map_or(last, |x: u64| x.max(last)));
            }
            v.synced &= r.synced.load(Relaxed);
            v.epoch_seen = v.epoch_seen.max(r.epoch_seen.load(Relaxed));
            v.switchover_received &= r.switchover_for.load(Relaxed) == me;
            v.flow_held_ns = v.flow_held_ns.saturating_add(r.flow_held_ns.load(Relaxed));
            let loops = r.loops.load(Relaxed);
            let p = &mut self.progress[i];
            if loops != p.0 {
                *p = (loops, now);
            } else if now.saturating_sub(p.1) > self.watchdog_ns {
                v.stalled = true;
            }
        }
        v
    }

    /// Records the control thread's scheduling, for `show sync`.
    pub fn set_control_rt_priority(&mut self, p: Option<u8>) {
        self.control_rt_priority = p;
    }

    /// One control-plane step.
    pub fn tick(&mut self) {
        let now = self.clock.now_ns();
        self.link.receive(&mut self.machine, now);
        let dp = self.dataplane_view(now);
        for a in self.machine.tick(now, &dp) {
            self.apply(a, now);
        }
        if self.release_ownership_at.is_some_and(|t| now >= t) {
            self.release_ownership_at = None;
            if self.machine.role() != Role::Primary {
                self.view.ownership.set_all(false);
            }
        }
        self.link.send_due(&self.machine, now, dp.synced);
        self.follow_takeover();
        self.log_followed_primary();
        self.log_synchronization();
        self.log_checkpoints();
        self.publish(now);
        self.takeover_deadline = self.machine.takeover_deadline(&dp);
    }

    /// A backup's primary is named once it is heard: a backup started first
    /// (or left by a takeover) follows nobody until then, and takes over
    /// from nobody.
    fn log_followed_primary(&mut self) {
        let epoch = self.machine.epoch();
        if self.machine.role() != Role::Backup || epoch == self.followed_epoch {
            return;
        }
        self.followed_epoch = epoch;
        let primary = self
            .machine
            .peers()
            .find(|p| p.role == control::heartbeat::WireRole::Primary && p.epoch == epoch)
            .map(|p| format!("node {}", p.id))
            .unwrap_or_else(|| "a primary not heard yet".to_string());
        log::info!(
            "node {} follows {primary}, epoch {epoch}",
            self.machine.config().node_id
        );
    }

    /// A primary's shard that sent a checkpoint whole says so, with what it
    /// took (how long the backups asking for it were unprotected); one that
    /// abandoned one says why (it tries again 200 ms later).
    fn log_checkpoints(&mut self) {
        for (w, told) in self.view.workers.iter().zip(self.checkpoints_told.iter_mut()) {
            let r = &w.repl;
            let abandoned = r.checkpoints_abandoned.load(Relaxed);
            if abandoned != told.1 {
                told.1 = abandoned;
                log::warn!(
                    "shard {}: checkpoint abandoned: {} ({abandoned} abandoned so far; the next starts in 200 ms)",
                    w.shard,
                    dataplane::worker::Abandoned::from_code(r.checkpoint_abandoned_why.load(Relaxed))
                        .map_or("unknown", dataplane::worker::Abandoned::text),
                );
            }
            let sent = r.checkpoints_sent.load(Relaxed);
            if sent == told.0 {
                continue;
            }
            told.0 = sent;
            let rounds = r.checkpoint_last_rounds.load(Relaxed);
            log::info!(
                "shard {}: checkpoint sent to the backups that asked: {rounds} round{} in {:.3} ms, the data ports held {:.3} ms at its close ({} pieces sent in all, {} checkpoints)",
                w.shard,
                if rounds == 1 { "" } else { "s" },
                r.checkpoint_last_ns.load(Relaxed) as f64 / 1e6,
                r.checkpoint_last_hold_ns.load(Relaxed) as f64 / 1e6,
                r.checkpoint_pieces.load(Relaxed),
                sent,
            );
        }
    }

    /// A backup's shard that stops being synchronized can no longer take
    /// over (until a checkpoint brings it back, or for `forward` until it
    /// joins the stream again):
    /// an operator must hear of it when it happens, not at the failure; and
    /// of a join, when it completes.
    fn log_synchronization(&mut self) {
        // Only a backup's flags are followed: a shard that lost it while
        // the node was still listening (the primary's stream began before
        // it was up) is told once the node is a backup.
        if self.machine.role() != Role::Backup {
            return;
        }
        for (w, was) in self.view.workers.iter().zip(self.shard_synced.iter_mut()) {
            let r = &w.repl;
            let joined_at = r.joined_at.load(Relaxed);
            let now = match (r.synced.load(Relaxed), r.joining.load(Relaxed)) {
                (true, _) if joined_at != 0 => ShardSync::Joined(joined_at),
                (true, _) => ShardSync::Synced,
                (false, true) => ShardSync::Joining,
                (false, false) => ShardSync::Lost,
            };
            if now == *was {
                continue;
            }
            match now {
                ShardSync::Synced => log::info!("shard {}: this backup is synchronized", w.shard),
                ShardSync::Joined(seq) if r.checkpoints_installed.load(Relaxed) > 0 => log::info!(
                    "shard {}: this backup is synchronized: it installed the primary's state checkpointed at sequence {} and follows the stream from {seq}, and the primary has transmitted everything up to it ({} checkpoints installed, {} gaps so far)",
                    w.shard,
                    seq - 1,
                    r.checkpoints_installed.load(Relaxed),
                    r.gaps.load(Relaxed),
                ),
                ShardSync::Joined(seq) => log::info!(
                    "shard {}: this backup is synchronized: it joined the primary's stream at sequence {seq} and the primary has transmitted everything before it ({} keeps no state; {} gaps so far)",
                    w.shard,
                    self.view.function.name(),
                    r.gaps.load(Relaxed),
                ),
                ShardSync::Joining => log::info!(
                    "shard {}: this backup joins the primary's stream at its first frame after a late start or a gap ({} gaps, {} records missing so far; {} keeps no state): synchronized once the primary has transmitted everything before that frame",
                    w.shard,
                    r.gaps.load(Relaxed),
                    r.missing.load(Relaxed),
                    self.view.function.name()
                ),
                ShardSync::Lost => log::warn!(
                    "shard {}: this backup is no longer synchronized ({} gaps, {} records missing, {} audit mismatches, last sequence {}): it will refuse to take over until the primary's checkpoint (or, for a function without state, its next frame) brings it back",
                    w.shard,
                    r.gaps.load(Relaxed),
                    r.missing.load(Relaxed),
                    r.audit_mismatches.load(Relaxed),
                    r.last_seq.load(Relaxed),
                ),
            }
            *was = now;
        }
    }

    /// How long the driver may wait for the next tick: a tick period, or
    /// less to be there when the primary's silence reaches the dead
    /// interval. (A deadline already passed gave its tick: no takeover
    /// came of it, so nothing is gained by ticking again at once.)
    pub fn next_tick_in(&self) -> Duration {
        let now = self.clock.now_ns();
        match self.takeover_deadline {
            Some(d) if d > now => Duration::from_nanos((d - now).min(TICK_NS)),
            _ => Duration::from_nanos(TICK_NS),
        }
    }

    fn send_all(&self, cmd: WorkerCmd) {
        for c in &self.commands {
            let _ = c.send(cmd);
        }
    }

    fn apply(&mut self, a: Action, now: u64) {
        match a {
            Action::BecomePrimary { epoch, takeover } => {
                if takeover {
                    let record = self.machine.last_takeover().unwrap_or_default();
                    let ms = |t: u64| (now.saturating_sub(t)) as f64 / 1e6;
                    log::warn!(
                        "TAKEOVER: node {} becomes primary, epoch {epoch} ({}): last heartbeat from the old primary {:.1} ms ago, last replication frame {:.1} ms ago",
                        self.machine.config().node_id,
                        if record.planned { "planned switchover" } else { "primary lost" },
                        ms(record.last_heartbeat_ns),
                        ms(record.last_replication_ns),
                    );
                    self.timeline = Some(TakeoverTimeline {
                        record,
                        first_egress_ns: 0,
                        replayed: 0,
                        unreplicated: 0,
                        window_evicted: 0,
                        done: false,
                    });
                    for w in &self.view.workers {
                        w.repl.takeover_done_ns.store(0, Relaxed);
                        w.repl.takeover_first_egress_ns.store(0, Relaxed);
                    }
                } else {
                    log::info!("node {} is primary, epoch {epoch}", self.machine.config().node_id);
                }
                self.release_ownership_at = None;
                // Ownership first: the workers transmit their shadow rings
                // as soon as they read the command.
                self.view.ownership.set_all(true);
                self.send_all(WorkerCmd::BecomePrimary { epoch });
                self.link.send_now(&self.machine, now, true);
            }
            Action::BecomeBackup { epoch, reason } => {
                let diverged = matches!(
                    reason,
                    BackupReason::HigherEpoch(_) | BackupReason::OutrankedPrimary(_) | BackupReason::Watchdog
                );
                match reason {
                    BackupReason::PrimaryPresent | BackupReason::Configured => {
                        log::info!("node {} is backup, epoch {epoch} ({reason:?})", self.machine.config().node_id)
                    }
                    _ => log::warn!("node {} steps down to backup, epoch {epoch}: {reason:?}", self.machine.config().node_id),
                }
                self.followed_epoch = epoch;
                self.view.ownership.set_all(false);
                self.send_all(WorkerCmd::BecomeBackup { epoch, diverged });
                self.link.send_now(&self.machine, now, false);
            }
            Action::HandOver { target, epoch } => {
                log::warn!("SWITCHOVER: node {} hands over to node {target} (epoch {epoch})", self.machine.config().node_id);
                self.send_all(WorkerCmd::HandOver { target });
                self.release_ownership_at = Some(now + self.machine.config().heartbeat_ns);
                self.link.send_now(&self.machine, now, true);
            }
            Action::Alarm(a) => log::warn!("ALARM {}: {}", a.name(), alarm_text(a)),
            Action::AlarmCleared(a) => log::info!("alarm {} cleared", a.name()),
            Action::Paused { ns } if ns >= self.machine.config().heartbeat_ns => log::warn!(
                "control loop paused {:.1} ms (this process descheduled, or the machine paused): not counted as the peers' silence",
                ns as f64 / 1e6
            ),
            Action::Paused { .. } => {}
            Action::TakeoverRefused => log::error!(
                "TAKEOVER REFUSED: the primary is gone but this backup is not synchronized (on some shard it neither followed the stream from sequence 1 nor from a checkpoint installed, or for a function without state from the sequence it joined at, without a gap since)"
            ),
        }
    }

    /// Logs the takeover's outcome once every worker has carried it out,
    /// and its first egress when that comes (then, or with the first
    /// packet after it).
    fn follow_takeover(&mut self) {
        let Some(t) = self.timeline.as_mut() else { return };
        let workers = &self.view.workers;
        let first_egress = || {
            workers
                .iter()
                .map(|w| w.repl.takeover_first_egress_ns.load(Relaxed))
                .filter(|x| *x != 0)
                .min()
                .unwrap_or(0)
        };
        let d = t.record.detected_ns;
        let after = |x: u64| x.saturating_sub(d) as f64 / 1e6;
        if t.done {
            if t.first_egress_ns == 0 {
                t.first_egress_ns = first_egress();
                if t.first_egress_ns != 0 {
                    log::warn!(
                        "TAKEOVER first egress {:.3} ms after detection",
                        after(t.first_egress_ns)
                    );
                }
            }
            return;
        }
        if !workers.iter().all(|w| w.repl.takeover_done_ns.load(Relaxed) != 0) {
            return;
        }
        t.done = true;
        t.replayed = workers.iter().map(|w| w.repl.takeover_replayed.load(Relaxed)).sum();
        t.unreplicated = workers.iter().map(|w| w.repl.takeover_unreplicated.load(Relaxed)).sum();
        t.window_evicted = workers.iter().map(|w| w.repl.window_evicted.load(Relaxed)).sum();
        t.first_egress_ns = first_egress();
        let done_ns = workers
            .iter()
            .map(|w| w.repl.takeover_done_ns.load(Relaxed))
            .max()
            .unwrap_or(0);
        log::warn!(
            "TAKEOVER done {:.3} ms after detection: {} shadow packets resent, {} unreplicated packets processed ({} window evictions so far), first egress {}",
            after(done_ns),
            t.replayed,
            t.unreplicated,
            t.window_evicted,
            if t.first_egress_ns == 0 {
                "not yet (nothing was pending)".to_string()
            } else {
                format!("{:.3} ms after detection", after(t.first_egress_ns))
            }
        );
    }

    fn publish(&self, now: u64) {
        let m = &self.machine;
        let status = ClusterStatus {
            role: m.role(),
            epoch: m.epoch(),
            eligible: m.eligible(),
            peers: m.peers().map(|p| (*p, now.saturating_sub(p.last_heard_ns))).collect(),
            alarms: Alarm::ALL
                .iter()
                .map(|a| (*a, m.alarm_count(*a), m.alarm_active(*a)))
                .collect(),
            takeovers: m.takeovers,
            takeovers_refused: m.takeovers_refused,
            step_downs: m.step_downs,
            heartbeats_rejected: m.heartbeats_rejected,
            link: self.link.counters,
            last_takeover: self.timeline,
            heartbeat_ms: (m.config().heartbeat_ns / 1_000_000) as u32,
            dead_ms: m.config().dead_ns() / 1_000_000,
            control_rt_priority: self.control_rt_priority,
            pauses: (m.pauses_detected, m.longest_pause_ns),
            backups: self.backups_heard(now),
        };
        if let Ok(mut c) = self.view.cluster.lock() {
            *c = Some(status);
        }
    }

    /// What the node's board holds of each backup, shard by shard.
    fn backups_heard(&self, now: u64) -> Vec<BackupHeard> {
        let mut out = Vec::new();
        for (i, w) in self.view.workers.iter().enumerate() {
            let last = w.repl.last_seq.load(Relaxed);
            for ack in self.signals.acks.heard(i as u16) {
                out.push(BackupHeard {
                    shard: i as u16,
                    ack,
                    lag: last.saturating_sub(ack.seq),
                    age_ns: now.saturating_sub(ack.at_ns),
                });
            }
        }
        out
    }

    /// The operator's planned switchover.
    pub fn switchover(&mut self) -> Result<String, String> {
        let now = self.clock.now_ns();
        let a = self.machine.switchover(now)?;
        self.apply(a, now);
        match a {
            Action::HandOver { target, .. } => Ok(format!("handing over to node {target}")),
            _ => Ok(String::new()),
        }
    }

    /// Testing the watchdog: stall every worker for `ms`.
    pub fn stall_workers(&self, ms: u64) {
        self.send_all(WorkerCmd::Stall { ms });
    }
}

fn alarm_text(a: Alarm) -> &'static str {
    match a {
        Alarm::ManagementDown => "no heartbeat from the primary, but its replication stream is alive: no takeover",
        Alarm::ReplicationDown => "no replication frame from the primary, but its heartbeats are alive: no takeover",
        Alarm::Watchdog => "a worker stopped making progress: stepping down",
        Alarm::BackupBehind => {
            "the backups held this primary back for a tenth of the last second or more (flow control): \
             they set the pair's pace, and traffic waits or is dropped at the NIC"
        }
    }
}
