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
    /// ticks.
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
                    if n.m.role() != Role::Primary || epoch > n.m.epoch() {
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
                let acts = n.m.tick(now, &dp);
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
}

#[test]
fn killed_primary_is_replaced_by_the_backup_within_the_dead_interval_plus_a_heartbeat() {
    let mut s = Sim::new(&[100, 100]);
    s.run(100);
    assert_eq!(s.primaries(), vec![1]);
    assert_eq!(s.nodes[0].m.epoch(), 1);
    s.kill(0);
    let killed_at = s.now;
    let t = s.run_until_primary(2, 100).expect("backup took over") - killed_at;
    assert!(t > 30 * MS && t <= 41 * MS, "took {} ms", t / MS);
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
    let cfg = *s.nodes[0].m.config();
    s.nodes[0].m = Machine::new(cfg, s.now);
    s.nodes[0].alive = true;
    s.nodes[0].boot = 2;
    s.nodes[0].seq = 0;
    s.nodes[0].synced = false;
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
