//! Several nodes' state machines on a simulated network with a
//! deterministic clock: links and processes fail on command, and the tests
//! read which node is primary, with which epoch, after each scenario.

use control::heartbeat::{Heartbeat, WireRole};
use control::machine::{Action, Alarm, BackupReason, DataPlaneView, Machine, MachineConfig, Role, StartRole};

const MS: u64 = 1_000_000;

struct Node {
    m: Machine,
    alive: bool,
    synced: bool,
    mgmt_up: bool,
    rep_up: bool,
    /// Last replication frame this node received, and its epoch.
    repl_last: Option<u64>,
    epoch_seen: u32,
    seq: u64,
    boot: u64,
    stalled: bool,
    switchover_for_me: bool,
    /// Not scheduled: sends nothing, ticks not (the process or the whole
    /// machine paused).
    frozen: bool,
    actions: Vec<Action>,
}

struct Sim {
    now: u64,
    nodes: Vec<Node>,
}

impl Sim {
    /// Node i has id i+1; node 0 starts as primary, the others as backups.
    fn new(priorities: &[u8]) -> Sim {
        let nodes = priorities
            .iter()
            .enumerate()
            .map(|(i, p)| Node {
                m: Machine::new(
                    MachineConfig {
                        node_id: i as u32 + 1,
                        priority: *p,
                        heartbeat_ns: 10 * MS,
                        dead_intervals: 3,
                        start_as: if i == 0 { StartRole::Primary } else { StartRole::Backup },
                    },
                    0,
                ),
                alive: true,
                synced: true,
                mgmt_up: true,
                rep_up: true,
                repl_last: None,
                epoch_seen: 0,
                seq: 0,
                boot: 1,
                stalled: false,
                switchover_for_me: false,
                frozen: false,
                actions: Vec::new(),
            })
            .collect();
        Sim { now: 0, nodes }
    }

    /// Advances 1 ms at a time: heartbeats every 10 ms over the management
    /// links that are up, replication frames every ms from each live
    /// primary over the replication links that are up, then every machine
    /// ticks (and again at its takeover deadline, as the driver does).
    fn run(&mut self, ms: u64) {
        for _ in 0..ms {
            self.now += MS;
            let now = self.now;
            if now.is_multiple_of(10 * MS) {
                let mut hbs = Vec::new();
                for n in self.nodes.iter_mut().filter(|n| n.alive && n.mgmt_up && !n.frozen) {
                    n.seq += 1;
                    hbs.push(n.m.heartbeat(n.boot, n.seq, n.synced));
                }
                for hb in hbs {
                    for n in self.nodes.iter_mut().filter(|n| n.alive && n.mgmt_up) {
                        n.m.on_heartbeat(&hb, now);
                    }
                }
            }
            // The replication stream stops a little before the heartbeats
            // in a real failure; the simulation sends frames every ms too.
            let primaries: Vec<(u32, bool)> = self
                .nodes
                .iter()
                .filter(|n| n.alive && n.m.role() == Role::Primary && !n.stalled && !n.frozen)
                .map(|n| (n.m.epoch(), n.rep_up))
                .collect();
            for (epoch, up) in primaries {
                for n in self.nodes.iter_mut().filter(|n| n.alive && n.rep_up && up) {
                    // A backup's data plane drops frames of an older epoch
                    // than its own (stale_epoch), as a primary's does.
                    if (n.m.role() != Role::Primary && epoch >= n.m.epoch()) || epoch > n.m.epoch() {
                        n.repl_last = Some(now);
                        n.epoch_seen = n.epoch_seen.max(epoch);
                    }
                }
            }
            for n in self.nodes.iter_mut().filter(|n| n.alive && !n.frozen) {
                let dp = DataPlaneView {
                    repl_last_rx_ns: n.repl_last,
                    synced: n.synced,
                    epoch_seen: n.epoch_seen,
                    stalled: n.stalled,
                    switchover_received: n.switchover_for_me,
                    flow_held_ns: 0,
                };
                let mut acts = n.m.tick(now, &dp);
                // The driver also ticks at a backup's takeover deadline
                // when it falls before the next ms (nothing arrives in
                // between: the simulation's events come on the ms).
                if let Some(d) = n.m.takeover_deadline(&dp).filter(|d| *d > now && *d < now + MS) {
                    acts.extend(n.m.tick(d, &dp));
                }
                for a in &acts {
                    if let Action::BecomeBackup {
                        reason: BackupReason::HigherEpoch(_),
                        ..
                    } = a
                    {
                        // A fenced primary's state diverged: no longer in sync.
                        n.synced = false;
                    }
                    if let Action::BecomePrimary { .. } = a {
                        n.switchover_for_me = false;
                    }
                }
                n.actions.extend(acts);
            }
        }
    }

    /// Runs up to `ms` until node `id` is the only primary; when it became so.
    fn run_until_primary(&mut self, id: u32, ms: u64) -> Option<u64> {
        for _ in 0..ms {
            self.run(1);
            if self.primaries() == vec![id] {
                return Some(self.now);
            }
        }
        None
    }

    fn primaries(&self) -> Vec<u32> {
        self.nodes
            .iter()
            .filter(|n| n.alive && n.m.role() == Role::Primary)
            .map(|n| n.m.config().node_id)
            .collect()
    }

    fn kill(&mut self, i: usize) {
        self.nodes[i].alive = false;
    }

    /// Node i restarted: a new machine, boot id and empty data plane.
    fn restart(&mut self, i: usize) {
        let cfg = *self.nodes[i].m.config();
        let n = &mut self.nodes[i];
        n.m = Machine::new(cfg, self.now);
        n.alive = true;
        n.boot += 1;
        n.seq = 0;
        n.synced = false;
        n.stalled = false;
        n.frozen = false;
        n.repl_last = None;
        n.epoch_seen = 0;
        n.switchover_for_me = false;
    }
}

#[test]
fn killed_primary_is_replaced_at_the_backups_takeover_deadline_just_past_the_dead_interval() {
    let mut s = Sim::new(&[100, 100]);
    s.run(100);
    assert_eq!(s.primaries(), vec![1]);
    assert_eq!(s.nodes[0].m.epoch(), 1);
    s.kill(0);
    let killed_at = s.now;
    s.run_until_primary(2, 100).expect("backup took over");
    // Detected at the deadline tick, just past the dead interval after
    // the last frame (the kill's ms).
    let t = s.nodes[1].m.last_takeover().expect("a takeover").detected_ns - killed_at;
    assert_eq!(t, 30 * MS + 1, "took {t} ns");
    for a in [Alarm::ManagementDown, Alarm::ReplicationDown] {
        assert_eq!(s.nodes[1].m.alarm_count(a), 0, "a dead primary is no false alarm");
    }
    assert_eq!(s.nodes[1].m.epoch(), 2);
    assert_eq!(s.nodes[1].m.takeovers, 1);
}

#[test]
fn a_primary_whose_stream_paused_31_ms_before_it_died_raises_no_alarm() {
    let mut s = Sim::new(&[100, 100]);
    s.run(100);
    // Its worker descheduled: replication stops, heartbeats go on.
    s.nodes[0].rep_up = false;
    s.run(31);
    s.kill(0);
    s.run(100);
    assert_eq!(s.primaries(), vec![2]);
    for a in [Alarm::ManagementDown, Alarm::ReplicationDown] {
        assert_eq!(s.nodes[1].m.alarm_count(a), 0, "{a:?}");
    }
}

#[test]
fn management_link_down_alone_raises_an_alarm_and_changes_nothing() {
    let mut s = Sim::new(&[100, 100]);
    s.run(100);
    s.nodes[1].mgmt_up = false;
    s.run(500);
    assert_eq!(s.primaries(), vec![1]);
    assert_eq!(s.nodes[1].m.alarm_count(Alarm::ManagementDown), 1);
    assert!(s.nodes[1].m.alarm_active(Alarm::ManagementDown));
    s.nodes[1].mgmt_up = true;
    s.run(50);
    assert!(!s.nodes[1].m.alarm_active(Alarm::ManagementDown));
    assert!(s.nodes[1]
        .actions
        .contains(&Action::AlarmCleared(Alarm::ManagementDown)));
    assert_eq!(s.primaries(), vec![1]);
}

#[test]
fn replication_link_down_alone_raises_an_alarm_and_changes_nothing() {
    let mut s = Sim::new(&[100, 100]);
    s.run(100);
    s.nodes[1].rep_up = false;
    s.run(500);
    assert_eq!(s.primaries(), vec![1]);
    assert_eq!(s.nodes[1].m.alarm_count(Alarm::ReplicationDown), 1);
    assert_eq!(s.nodes[1].m.takeovers, 0);
}

#[test]
fn both_links_down_means_takeover_and_links_back_up_leave_one_primary() {
    let mut s = Sim::new(&[100, 100]);
    s.run(100);
    s.nodes[1].mgmt_up = false;
    s.nodes[1].rep_up = false;
    s.run(100);
    assert_eq!(s.primaries(), vec![1, 2], "split brain while partitioned");
    s.nodes[1].mgmt_up = true;
    s.nodes[1].rep_up = true;
    s.run(50);
    assert_eq!(s.primaries(), vec![2], "the higher epoch wins");
    assert_eq!(s.nodes[0].m.role(), Role::Backup);
    assert_eq!(s.nodes[0].m.epoch(), 2);
    assert_eq!(s.nodes[0].m.step_downs, 1);
    assert!(s.nodes[0].actions.contains(&Action::BecomeBackup {
        epoch: 2,
        reason: BackupReason::HigherEpoch(2)
    }));
}

#[test]
fn an_unsynchronized_backup_refuses_to_take_over_once_per_episode() {
    let mut s = Sim::new(&[100, 100]);
    s.nodes[1].synced = false;
    s.run(100);
    s.kill(0);
    s.run(300);
    assert!(s.primaries().is_empty());
    assert_eq!(s.nodes[1].m.takeovers_refused, 1);
    assert_eq!(
        s.nodes[1]
            .actions
            .iter()
            .filter(|a| **a == Action::TakeoverRefused)
            .count(),
        1
    );
}

#[test]
fn with_two_backups_the_higher_priority_takes_over_then_the_other() {
    let mut s = Sim::new(&[100, 200, 150]);
    s.run(100);
    assert_eq!(s.primaries(), vec![1]);
    s.kill(0);
    s.run(100);
    assert_eq!(s.primaries(), vec![2], "priority 200 wins");
    assert_eq!(s.nodes[2].m.role(), Role::Backup);
    assert_eq!(s.nodes[2].m.epoch(), 2, "the other backup follows the new primary");
    s.kill(1);
    s.run(100);
    assert_eq!(s.primaries(), vec![3]);
    assert_eq!(s.nodes[2].m.epoch(), 3);
}

#[test]
fn equal_priorities_elect_the_lowest_node_id() {
    let mut s = Sim::new(&[100, 100, 100]);
    s.run(100);
    s.kill(0);
    s.run(100);
    assert_eq!(s.primaries(), vec![2]);
}

#[test]
fn a_restarted_old_primary_rejoins_as_backup() {
    let mut s = Sim::new(&[100, 100]);
    s.run(100);
    s.kill(0);
    s.run(100);
    assert_eq!(s.primaries(), vec![2]);
    // Restart node 1: a new machine, a new boot id, configured primary.
    s.restart(0);
    s.run(100);
    assert_eq!(s.primaries(), vec![2]);
    assert_eq!(s.nodes[0].m.role(), Role::Backup);
    assert_eq!(s.nodes[0].m.epoch(), 2);
}

#[test]
fn a_stalled_primary_steps_down_and_the_backup_takes_over() {
    let mut s = Sim::new(&[100, 100]);
    s.run(100);
    s.nodes[0].stalled = true;
    s.run(100);
    assert_eq!(s.primaries(), vec![2]);
    assert_eq!(s.nodes[0].m.alarm_count(Alarm::Watchdog), 1);
}

#[test]
fn planned_switchover_hands_over_to_the_best_backup_without_a_second_primary() {
    let mut s = Sim::new(&[100, 120, 110]);
    s.run(100);
    let now = s.now;
    let act = s.nodes[0].m.switchover(now).expect("switchover");
    assert_eq!(act, Action::HandOver { target: 2, epoch: 1 });
    // The data plane delivers SWITCHOVER frames to node 2 in-band.
    s.nodes[1].switchover_for_me = true;
    s.run(1);
    assert_eq!(s.primaries(), vec![2]);
    assert_eq!(s.nodes[1].m.epoch(), 2);
    assert!(s.nodes[1].m.last_takeover().is_some_and(|t| t.planned));
    s.run(200);
    assert_eq!(s.primaries(), vec![2]);
    assert_eq!(s.nodes[0].m.role(), Role::Backup);
    assert_eq!(s.nodes[2].m.epoch(), 2);
    assert_eq!(s.nodes[0].m.takeovers, 0);
}

#[test]
fn forged_heartbeat_claiming_a_higher_epoch_fails_authentication() {
    let key = b"cluster key, thirty-two bytes!!!";
    let forged = Heartbeat {
        node_id: 9,
        role: WireRole::Primary,
        epoch: 99,
        priority: 255,
        synced: true,
        boot_id: 1,
        seq: 1,
        switchover_to: 0,
    }
    .encode(b"the attacker's own guessed key!!");
    assert!(Heartbeat::decode(&forged, key).is_err());
}

#[test]
fn a_pause_of_the_whole_machine_is_no_takeover_even_when_the_backup_resumes_first() {
    let mut s = Sim::new(&[100, 100]);
    s.run(100);
    // Both processes stop for 50 ms; the backup is scheduled 2 ms before
    // the primary sends anything again.
    for n in &mut s.nodes {
        n.frozen = true;
    }
    s.run(50);
    s.nodes[1].frozen = false;
    s.run(2);
    s.nodes[0].frozen = false;
    s.run(100);
    assert_eq!(s.primaries(), vec![1], "no takeover");
    assert_eq!(s.nodes[1].m.takeovers, 0);
    assert_eq!(s.nodes[1].m.pauses_detected, 1);
    assert!(s.nodes[1]
        .actions
        .iter()
        .any(|a| matches!(a, Action::Paused { ns } if *ns == 50 * MS)));
}

#[test]
fn a_primary_that_dies_while_the_backup_is_paused_is_replaced_after_a_dead_interval_of_running() {
    let mut s = Sim::new(&[100, 100]);
    s.run(100);
    s.kill(0);
    let killed_at = s.now;
    s.nodes[1].frozen = true;
    s.run(20);
    s.nodes[1].frozen = false;
    let t = s.run_until_primary(2, 100).expect("backup took over") - killed_at;
    // The dead interval (30 ms) counts only while the backup runs: its 20
    // ms pause comes on top (at most a heartbeat interval earlier, as ever).
    assert!(t > 50 * MS && t <= 61 * MS, "took {} ms", t / MS);
}

#[test]
fn a_stale_primary_steps_down_for_a_synchronized_backup_of_a_newer_epoch() {
    let mut s = Sim::new(&[100, 120, 110]);
    s.run(100);
    // Node 1 cut off: node 2 takes over, node 3 follows it.
    s.nodes[0].mgmt_up = false;
    s.nodes[0].rep_up = false;
    s.run(100);
    assert_eq!(s.primaries(), vec![1, 2]);
    assert_eq!(s.nodes[2].m.epoch(), 2);
    // Node 2 dies as node 1 comes back: node 3 hears a primary again, but
    // of epoch 1, whose stream it drops.
    s.kill(1);
    s.nodes[0].mgmt_up = true;
    s.nodes[0].rep_up = true;
    s.run(100);
    assert_eq!(s.primaries(), vec![3], "the backup with the newer sessions serves");
    assert_eq!(s.nodes[2].m.epoch(), 3);
    assert!(s.nodes[0].actions.contains(&Action::BecomeBackup {
        epoch: 2,
        reason: BackupReason::HigherEpoch(2)
    }));
    assert_eq!(s.nodes[0].m.role(), Role::Backup);
}

// ---- Random faults ----

/// xorshift64*: the same faults for the same seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// What a node was during one millisecond, as the fault checks see it.
#[derive(Clone, Copy)]
struct Moment {
    mgmt_up: bool,
    rep_up: bool,
    primary: bool,
    epoch: u32,
}

impl Sim {
    fn moments(&self) -> Vec<Moment> {
        self.nodes
            .iter()
            .map(|n| {
                let serving = n.alive && !n.frozen && !n.stalled;
                Moment {
                    mgmt_up: n.mgmt_up,
                    rep_up: n.rep_up,
                    primary: serving && n.m.role() == Role::Primary,
                    epoch: n.m.epoch(),
                }
            })
            .collect()
    }
}

/// Runs `ms` milliseconds one at a time, recording each node's moments
/// and checking that no node took over (unplanned) from a primary of its
/// epoch or later that served throughout the last dead interval and a
/// heartbeat on a link it shared with the taker, management or
/// replication. Each node's epoch
/// never goes down while it runs.
fn run_checked(s: &mut Sim, ms: u64, history: &mut Vec<Vec<Moment>>, seed: u64) {
    // The dead interval, a heartbeat interval of slack for its phase, and
    // a ms for the tick.
    const WINDOW: usize = 30 + 10 + 1;
    for _ in 0..ms {
        let before: Vec<(usize, u64, u32)> = s.nodes.iter().map(|n| (n.actions.len(), n.boot, n.m.epoch())).collect();
        s.run(1);
        history.push(s.moments());
        for (b, n) in s.nodes.iter().enumerate() {
            let (seen, boot, epoch) = before[b];
            if n.boot == boot {
                assert!(n.m.epoch() >= epoch, "seed {seed}: node {} epoch went down", b + 1);
            }
            let took_over = n.actions[seen.min(n.actions.len())..]
                .iter()
                .any(|a| matches!(a, Action::BecomePrimary { takeover: true, .. }));
            if !took_over || n.m.last_takeover().is_some_and(|t| t.planned) || history.len() < WINDOW {
                continue;
            }
            // Up to this very ms: a primary that handed over (a planned
            // switchover whose frame was lost) is primary no more.
            let window = &history[history.len() - WINDOW..];
            for p in (0..s.nodes.len()).filter(|p| *p != b) {
                // A primary of an older epoch than the taker's is stale to
                // it (its frames are dropped): replacing it is fencing.
                let served = window.iter().all(|m| m[p].primary && m[p].epoch >= m[b].epoch);
                let mgmt = window.iter().all(|m| m[p].mgmt_up && m[b].mgmt_up);
                let rep = window.iter().all(|m| m[p].rep_up && m[b].rep_up);
                assert!(
                    !(served && (mgmt || rep)),
                    "seed {seed}: node {} took over at {} ms from node {}, which served as primary and was heard (management {mgmt}, replication {rep})",
                    b + 1,
                    s.now / MS,
                    p + 1
                );
            }
        }
    }
}

#[test]
fn random_faults_never_cause_a_false_takeover_and_healing_leaves_one_primary() {
    for seed in 1..=1000u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
        let priorities = [[100, 100, 0], [100, 120, 110], [100, 90, 90]][rng.below(3) as usize];
        let nodes = 2 + rng.below(2) as usize;
        let mut s = Sim::new(&priorities[..nodes]);
        let mut history = Vec::new();
        run_checked(&mut s, 100, &mut history, seed);
        // Faults, each held for 1 to 200 ms.
        for _ in 0..30 {
            let i = rng.below(nodes as u64) as usize;
            match rng.below(9) {
                0 => s.nodes[i].mgmt_up = !s.nodes[i].mgmt_up,
                1 => s.nodes[i].rep_up = !s.nodes[i].rep_up,
                2 => {
                    s.nodes[i].mgmt_up = !s.nodes[i].mgmt_up;
                    s.nodes[i].rep_up = s.nodes[i].mgmt_up;
                }
                3 if s.nodes[i].alive => s.kill(i),
                3 | 4 if !s.nodes[i].alive => s.restart(i),
                5 => s.nodes[i].frozen = !s.nodes[i].frozen,
                6 if s.nodes[i].m.role() == Role::Primary => s.nodes[i].stalled = true,
                7 if s.nodes[i].alive && !s.nodes[i].frozen && s.nodes[i].m.role() == Role::Primary => {
                    let now = s.now;
                    if let Ok(Action::HandOver { target, .. }) = s.nodes[i].m.switchover(now) {
                        // SWITCHOVER goes in-band: over the replication links.
                        let t = target as usize - 1;
                        if s.nodes[i].rep_up && s.nodes[t].rep_up && s.nodes[t].alive {
                            s.nodes[t].switchover_for_me = true;
                        }
                    }
                }
                _ => {}
            }
            let hold = 1 + rng.below(200);
            run_checked(&mut s, hold, &mut history, seed);
        }
        // Healed: every node up and running, every link up.
        for i in 0..nodes {
            if !s.nodes[i].alive || s.nodes[i].stalled {
                s.restart(i);
            }
            let n = &mut s.nodes[i];
            (n.frozen, n.mgmt_up, n.rep_up) = (false, true, true);
        }
        run_checked(&mut s, 1000, &mut history, seed);
        let primaries = s.primaries();
        assert!(
            primaries.len() <= 1,
            "seed {seed}: primaries {primaries:?} after healing"
        );
        match primaries.first() {
            Some(&p) => {
                let epoch = s.nodes[p as usize - 1].m.epoch();
                for n in s.nodes.iter().filter(|n| n.m.config().node_id != p) {
                    // A backup left at a higher epoch ignores the primary's
                    // stream; only one that could not serve anyway may be.
                    let could_serve = n.synced && n.m.eligible();
                    let follows = n.m.epoch() == epoch || (n.m.epoch() > epoch && !could_serve);
                    assert!(
                        n.m.role() == Role::Backup && follows,
                        "seed {seed}: node {} ({}, epoch {}, synced {}, eligible {}) does not follow primary {p} (epoch {epoch})",
                        n.m.config().node_id,
                        n.m.role().name(),
                        n.m.epoch(),
                        n.synced,
                        n.m.eligible()
                    );
                }
            }
            None => {
                // Nobody left who could serve: every node was fenced,
                // restarted without the stream, or never saw a primary.
                for n in &s.nodes {
                    assert!(
                        !(n.synced && n.m.eligible() && n.m.role() == Role::Backup && n.m.takeovers_refused == 0),
                        "seed {seed}: node {} could take over but no node is primary",
                        n.m.config().node_id
                    );
                }
            }
        }
    }
}
