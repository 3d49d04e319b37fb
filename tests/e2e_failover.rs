//! Failover end to end on the test bed: a primary and backup(s) running
//! `forward` on `net_af_packet` vdevs, a sequence-numbered UDP stream and
//! iperf3 TCP between the kernel peers, processes killed with SIGKILL, links
//! taken down with `ip link`. Run one at a time (`--test-threads=1`).

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;

fn u(v: &serde_json::Value, k: &str) -> u64 {
    v[k].as_u64().unwrap_or(u64::MAX)
}

/// (ACKs sent, ACKs read) of shard 0 in a `show sync`
/// ("... acks tx N rx M ...").
fn acks_of(sync: &str) -> (u64, u64) {
    let words: Vec<&str> = sync
        .split("acks tx ")
        .nth(1)
        .map(|rest| rest.split_whitespace().take(3).collect())
        .unwrap_or_default();
    let num = |i: usize| words.get(i).and_then(|w| w.parse().ok()).unwrap_or(0);
    (num(0), num(2))
}

#[test]
fn kill_9_of_the_primary_under_the_stream_loses_no_packet_and_tcp_survives() {
    let bed = TestBed::up("kill", true, "primary backup");
    let dir = scratch("kill");
    let (mut p, mut b) = start_pair(&bed, &dir, FORWARD);

    let iperf = Iperf::start(&bed, &dir, 6);
    let stream = Stream::start(&bed, &dir, 20_000, 5.0);
    std::thread::sleep(Duration::from_millis(2500));
    // Flow control runs over the real link: the backup acknowledges, the
    // primary reads it.
    let (p_sync, b_sync) = (p.cmd("show sync"), b.cmd("show sync"));
    assert!(acks_of(&p_sync).1 > 0, "the primary hears ACKs: {p_sync}");
    assert!(
        p_sync.contains("backup node 2 shard 0: acked ") && p_sync.contains(" behind), synchronized, heard "),
        "the primary names its backup: {p_sync}"
    );
    assert!(acks_of(&b_sync).0 > 0, "the backup sends ACKs: {b_sync}");
    p.kill9();
    let epoch = wait_role(&mut b, "primary", 5);
    assert_eq!(epoch, 2);

    let r = stream.finish();
    let tcp = iperf.finish();
    assert!(u(&r, "sent") >= 90_000, "{r}");
    assert_eq!(u(&r, "lost"), 0, "no packet lost: {r}");
    let sync = b.cmd("show sync");
    assert!(
        u(&r, "duplicates") <= 32,
        "at most one burst of duplicates: {r}\n{sync}"
    );
    assert!(tcp.get("error").is_none(), "iperf3 failed: {}", tcp["error"]);
    assert!(
        tcp["end"]["sum_received"]["bytes"].as_u64().unwrap_or(0) > 10_000_000,
        "TCP carried data"
    );
    assert!(sync.contains("takeovers 1  refused 0"), "{sync}");
    // Under the stream the new primary had egress at once: the takeover
    // record says when (the packets its window held, or the next ones).
    let first_egress_ms: f64 = sync
        .split("first egress ")
        .nth(1)
        .and_then(|t| t.split(" ms after detection").next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("a first egress after detection: {sync}"));
    assert!((0.0..100.0).contains(&first_egress_ms), "{sync}");
    assert_eq!(
        alarm_count(&mut b, "replication_down") + alarm_count(&mut b, "management_down"),
        0,
        "no false alarm: {sync}"
    );
}

#[test]
fn a_backup_killed_under_the_stream_costs_the_primary_no_packet() {
    let bed = TestBed::up("bkill", true, "primary backup");
    let dir = scratch("bkill");
    let (mut p, mut b) = start_pair(&bed, &dir, FORWARD);

    let stream = Stream::start(&bed, &dir, 20_000, 4.0);
    std::thread::sleep(Duration::from_millis(1500));
    assert!(acks_of(&p.cmd("show sync")).1 > 0, "the backup was acknowledging");
    b.kill9();
    let r = stream.finish();
    assert!(u(&r, "sent") >= 70_000, "{r}");
    assert_eq!(
        (u(&r, "lost"), u(&r, "duplicates")),
        (0, 0),
        "a dead backup neither holds nor drops: {r}"
    );
    let sync = p.cmd("show sync");
    assert_eq!(role_of(&mut p).0, "primary");
    assert!(sync.contains("backup lag 0 "), "no backup left to wait for: {sync}");
}

#[test]
fn management_link_down_alone_raises_an_alarm_and_changes_no_role() {
    let bed = TestBed::up("mgmt", true, "primary backup");
    let dir = scratch("mgmt");
    let (mut p, mut b) = start_pair(&bed, &dir, FORWARD);

    bed.run("backup", &["ip", "link", "set", "mgmt0", "down"]);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(role_of(&mut b).0, "backup");
    assert_eq!(role_of(&mut p).0, "primary");
    assert_eq!(alarm_count(&mut b, "management_down"), 1);
    assert!(b.cmd("show sync").contains("management_down: raised 1 time(s), ACTIVE"));

    bed.run("backup", &["ip", "link", "set", "mgmt0", "up"]);
    std::thread::sleep(Duration::from_millis(500));
    assert!(!b.cmd("show sync").contains("ACTIVE"), "alarm cleared");
    assert_eq!(
        (role_of(&mut p).0, role_of(&mut b).0),
        ("primary".to_string(), "backup".to_string())
    );
}

#[test]
fn replication_link_down_alone_raises_an_alarm_and_changes_no_role() {
    let bed = TestBed::up("repl", true, "primary backup");
    let dir = scratch("repl");
    let (mut p, mut b) = start_pair(&bed, &dir, FORWARD);

    bed.run("backup", &["ip", "link", "set", "rep0", "down"]);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(role_of(&mut b).0, "backup");
    assert_eq!(role_of(&mut p).0, "primary");
    assert_eq!(alarm_count(&mut b, "replication_down"), 1);
    bed.run("backup", &["ip", "link", "set", "rep0", "up"]);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        (role_of(&mut p).0, role_of(&mut b).0),
        ("primary".to_string(), "backup".to_string())
    );
}

#[test]
fn both_links_down_mean_takeover_and_links_back_up_leave_one_primary() {
    let bed = TestBed::up("both", true, "primary backup");
    let dir = scratch("both");
    let (mut p, mut b) = start_pair(&bed, &dir, FORWARD);

    bed.run("backup", &["ip", "link", "set", "mgmt0", "down"]);
    bed.run("backup", &["ip", "link", "set", "rep0", "down"]);
    assert_eq!(wait_role(&mut b, "primary", 5), 2, "the backup takes over with epoch 2");
    bed.run("backup", &["ip", "link", "set", "mgmt0", "up"]);
    bed.run("backup", &["ip", "link", "set", "rep0", "up"]);
    // The old primary hears epoch 2 and steps down: one primary again.
    let e = wait_role(&mut p, "backup", 5);
    assert_eq!(e, 2);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(role_of(&mut b), ("primary".to_string(), 2));
    let sync = p.cmd("show sync");
    assert!(sync.contains("step-downs 1"), "{sync}");
    assert!(
        sync.contains("synchronized: no"),
        "a fenced primary is not eligible: {sync}"
    );
}

#[test]
fn a_restarted_old_primary_rejoins_as_backup_and_never_transmits_on_its_data_ports() {
    let bed = TestBed::up("rejoin", true, "primary backup");
    let dir = scratch("rejoin");
    let primary_cfg = cluster_config("primary", 1, 200, "primary", &["backup"]);
    let mut b = start_cluster_node(
        &bed,
        &dir,
        "backup",
        &cluster_config("backup", 2, 100, "backup", &["primary"]),
        "a",
    );
    wait_role(&mut b, "backup", 10);
    let mut p = start_cluster_node(&bed, &dir, "primary", &primary_cfg, "a");
    let epoch = wait_role(&mut p, "primary", 10);
    wait_following(&mut b, epoch, 10);
    p.kill9();
    wait_role(&mut b, "primary", 5);

    // The old primary comes back with its configuration unchanged.
    let mut p2 = start_cluster_node(&bed, &dir, "primary", &primary_cfg, "b");
    assert_eq!(wait_role(&mut p2, "backup", 10), 2, "rejoins as backup of epoch 2");
    p2.cmd("clear port stats all");
    // Capture what node 1 sends into the switch while traffic flows.
    let cap = |port: &str| {
        std::process::Command::new("ip")
            .args([
                "netns",
                "exec",
                &bed.ns("sw"),
                "tcpdump",
                "-i",
                port,
                "-Q",
                "in",
                "-n",
                "-c",
                "1000",
                "-w",
            ])
            .arg(dir.join(format!("{port}.pcap")))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("tcpdump")
    };
    let mut caps = [cap("in-primary"), cap("out-primary")];
    std::thread::sleep(Duration::from_millis(800));
    let ping = bed.run("client", &["ping", "-c", "20", "-i", "0.05", "-W", "2", "10.10.2.2"]);
    assert!(
        String::from_utf8_lossy(&ping.stdout).contains(" 0% packet loss"),
        "the new primary forwards"
    );
    std::thread::sleep(Duration::from_millis(300));
    for c in &mut caps {
        signal(c.id(), "INT");
        let _ = c.wait();
    }
    for port in ["in-primary", "out-primary"] {
        let out = std::process::Command::new("tcpdump")
            .args(["-r"])
            .arg(dir.join(format!("{port}.pcap")))
            .args(["-n"])
            .output()
            .expect("tcpdump -r");
        let lines = String::from_utf8_lossy(&out.stdout).lines().count();
        assert_eq!(lines, 0, "node 1 sent {lines} frames on {port} while backup");
    }
    let stats = parse_port_stats(&p2.cmd("show port stats all"));
    assert_eq!((stats["inside"].tx_packets, stats["outside"].tx_packets), (0, 0));
    assert!(
        stats["inside"].rx_packets >= 20,
        "it saw the traffic (its ingress window)"
    );
}

#[test]
fn with_two_backups_the_higher_priority_takes_over_then_the_other_without_loss() {
    let bed = TestBed::up("two", true, "primary backup backup2");
    let dir = scratch("two");
    let mut b1 = start_cluster_node(
        &bed,
        &dir,
        "backup",
        &cluster_config("backup", 2, 100, "backup", &["primary", "backup2"]),
        "a",
    );
    let mut b2 = start_cluster_node(
        &bed,
        &dir,
        "backup2",
        &cluster_config("backup2", 3, 150, "backup", &["primary", "backup"]),
        "a",
    );
    wait_role(&mut b1, "backup", 10);
    wait_role(&mut b2, "backup", 10);
    let mut p = start_cluster_node(
        &bed,
        &dir,
        "primary",
        &cluster_config("primary", 1, 200, "primary", &["backup", "backup2"]),
        "a",
    );
    let epoch = wait_role(&mut p, "primary", 10);
    wait_following(&mut b1, epoch, 10);
    wait_following(&mut b2, epoch, 10);

    let stream = Stream::start(&bed, &dir, 10_000, 6.0);
    std::thread::sleep(Duration::from_millis(1500));
    p.kill9();
    assert_eq!(wait_role(&mut b2, "primary", 5), 2, "priority 150 takes over");
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        role_of(&mut b1),
        ("backup".to_string(), 2),
        "the other follows the new primary"
    );
    std::thread::sleep(Duration::from_millis(1500));
    b2.kill9();
    assert_eq!(wait_role(&mut b1, "primary", 5), 3);
    let r = stream.finish();
    assert_eq!(u(&r, "lost"), 0, "{r}");
    assert!(u(&r, "duplicates") <= 64, "{r}");
}

#[test]
fn planned_switchover_under_the_stream_loses_nothing_and_duplicates_nothing() {
    let bed = TestBed::up("swo", true, "primary backup");
    let dir = scratch("swo");
    let (mut p, mut b) = start_pair(&bed, &dir, FORWARD);
    let stream = Stream::start(&bed, &dir, 20_000, 4.0);
    std::thread::sleep(Duration::from_millis(1500));
    let out = p.cmd("switchover");
    assert!(out.contains("handing over to node 2"), "{out}");
    assert_eq!(wait_role(&mut b, "primary", 5), 2);
    let r = stream.finish();
    assert_eq!(u(&r, "lost"), 0, "{r}");
    assert_eq!(u(&r, "duplicates"), 0, "{r}");
    assert_eq!(role_of(&mut p), ("backup".to_string(), 2));
    assert!(
        p.cmd("show sync").contains("synchronized: yes"),
        "the old primary follows in sync"
    );
}

/// A backup descheduled for a moment comes back with both RX rings backed
/// up; its replicas then overtake their own copies (one replication burst
/// carries many batched records). The copies must still be retired, or a
/// takeover would process them a second time.
#[test]
fn a_backup_that_stalled_under_the_stream_catches_up_and_its_takeover_duplicates_nothing() {
    let bed = TestBed::up("stall", true, "primary backup");
    let dir = scratch("stall");
    let (mut p, mut b) = start_pair(&bed, &dir, FORWARD);
    let stream = Stream::start(&bed, &dir, 20_000, 4.0);
    std::thread::sleep(Duration::from_millis(1500));
    signal(b.pid(), "STOP");
    std::thread::sleep(Duration::from_millis(60));
    signal(b.pid(), "CONT");
    std::thread::sleep(Duration::from_millis(1000));
    let before = b.cmd("show sync");
    p.kill9();
    wait_role(&mut b, "primary", 5);
    let r = stream.finish();
    let after = b.cmd("show sync");
    assert_eq!(u(&r, "lost"), 0, "no packet lost: {r}\n{after}");
    assert!(
        u(&r, "duplicates") <= 32,
        "at most one burst of duplicates: {r}\nbefore the kill:\n{before}\nafter:\n{after}"
    );
    assert!(after.contains("takeovers 1  refused 0"), "{after}");
}

/// The failure detector must not wake late behind busy-polling workers: the
/// control (main) thread runs SCHED_FIFO at `management.realtime_priority`
/// (default 10); the threads created before it, workers included, do not.
#[test]
fn the_control_thread_runs_at_realtime_priority_and_the_workers_do_not() {
    let bed = TestBed::up("rtprio", true, "primary backup");
    let dir = scratch("rtprio");
    let (mut p, _b) = start_pair(&bed, &dir, FORWARD);
    let sync = p.cmd("show sync");
    assert!(sync.contains("control thread SCHED_FIFO 10"), "{sync}");
    let policy = |tid: &str| {
        let stat = std::fs::read_to_string(format!("/proc/{}/task/{tid}/stat", p.pid())).unwrap_or_default();
        // After the command name in parentheses: field 40 is rt_priority,
        // 41 the policy (1: SCHED_FIFO).
        let rest: Vec<&str> = stat.rsplit_once(") ").map(|x| x.1).unwrap_or("").split(' ').collect();
        (
            rest.get(37).copied().unwrap_or("?").to_string(),
            rest.get(38).copied().unwrap_or("?").to_string(),
        )
    };
    assert_eq!(
        policy(&p.pid().to_string()),
        ("10".to_string(), "1".to_string()),
        "main thread"
    );
    let mut others = 0;
    for t in std::fs::read_dir(format!("/proc/{}/task", p.pid()))
        .expect("task dir")
        .flatten()
    {
        let tid = t.file_name().to_string_lossy().to_string();
        if tid != p.pid().to_string() {
            assert_eq!(policy(&tid), ("0".to_string(), "0".to_string()), "thread {tid}");
            others += 1;
        }
    }
    assert!(others >= 2, "a worker and the prompt thread at least ({others})");
}

/// The number after `key` in `text` (`show sync`'s "last_seq 12", ...).
fn number_after(text: &str, key: &str) -> u64 {
    text.split(key)
        .nth(1)
        .and_then(|t| t.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no {key:?} in: {text}"))
}

/// A primary started alone carries three pings (its stream under way: the
/// returned sequence), then a backup starts and hears it.
fn primary_then_pings_then_backup(bed: &TestBed, dir: &Path, function: &str) -> (Lockstep, Lockstep, u64, u32) {
    let mut p = start_pair_node(bed, dir, "primary", function);
    let epoch = wait_role(&mut p, "primary", 10);
    let ping = bed.run("client", &["ping", "-c", "3", "-i", "0.2", "-W", "2", "10.10.2.2"]);
    assert!(ping.status.success(), "{}", String::from_utf8_lossy(&ping.stdout));
    let before = number_after(&p.cmd("show sync"), "last_seq ");
    assert!(before >= 6, "three echoes and their replies were numbered: {before}");
    let mut b = start_pair_node(bed, dir, "backup", function);
    wait_following(&mut b, epoch, 10);
    (p, b, before, epoch)
}

/// A backup of a function with state that missed the start of the
/// primary's stream (here a NAT whose sessions, and a TCP connection
/// through it, were made before the backup existed) is brought into sync
/// by the primary's checkpoint: it installs the sessions and the learned
/// neighbours, follows the stream from the checkpoint's boundary, holds
/// the same translations as the primary, and at the kill takes over with
/// the TCP connection alive and nothing of a UDP stream lost.
#[test]
fn a_nat_backup_started_after_the_primarys_first_packet_is_checkpointed_and_takes_over_every_session() {
    let bed = TestBed::up("late", false, "primary backup");
    let dir = scratch("late");
    let nat = gateway_function("nat");
    let mut p = start_pair_node(&bed, &dir, "primary", &nat);
    let epoch = wait_role(&mut p, "primary", 10);
    let ping = bed.run("client", &["ping", "-c", "3", "-i", "0.2", "-W", "2", "10.10.2.2"]);
    assert!(ping.status.success(), "{}", String::from_utf8_lossy(&ping.stdout));
    // A TCP connection that outlives the primary, opened before the backup.
    let tcp = Iperf::start_with(&bed, &dir, &["-t", "6", "-b", "2M"]);
    std::thread::sleep(Duration::from_millis(1000));
    let mut b = start_pair_node(&bed, &dir, "backup", &nat);
    wait_following(&mut b, epoch, 10);
    wait_stderr(
        &b,
        "shard 0: this backup is synchronized: it installed the primary's state checkpointed at sequence",
        5,
    );
    let sync = b.cmd("show sync");
    assert!(sync.contains("synchronized: yes"), "{sync}");
    // One checkpoint, unless a frame lost on the link made it ask again.
    assert!(
        number_after(&sync, ") installed ") >= 1,
        "a checkpoint installed: {sync}"
    );
    let p_sync = p.cmd("show sync");
    assert!(number_after(&p_sync, "checkpoints sent ") >= 1, "{p_sync}");
    // The same translations on both, the connection made before the backup
    // included (the listing of a session shows its replicated last-seen
    // time: equal too, as the backup follows the stream).
    let tcp_sessions = |ls: &mut Lockstep| -> Vec<String> {
        ls.cmd("show sessions")
            .lines()
            .filter(|l| l.contains("10.10.2.2:5201"))
            .filter_map(|l| {
                l.split("via :")
                    .nth(1)
                    .map(|v| v.split_whitespace().next().unwrap_or("").to_string())
            })
            .collect()
    };
    let before = tcp_sessions(&mut p);
    assert!(!before.is_empty(), "iperf3's connections have sessions");
    assert_eq!(
        tcp_sessions(&mut b),
        before,
        "the backup holds the primary's translations"
    );

    let stream = Stream::start(&bed, &dir, 5_000, 3.0);
    std::thread::sleep(Duration::from_millis(1000));
    p.kill9();
    assert_eq!(wait_role(&mut b, "primary", 5), epoch + 1);
    let r = stream.finish();
    let tcp = tcp.finish();
    assert!(tcp.get("error").is_none(), "iperf3: {}", tcp["error"]);
    assert!(u(&r, "sent") >= 14_000, "{r}");
    assert_eq!(u(&r, "lost"), 0, "no packet lost: {r}");
    let sync = b.cmd("show sync");
    assert!(sync.contains("takeovers 1  refused 0"), "{sync}");
}

/// `forward` keeps no state: a backup started after the primary's stream
/// began joins it at the first frame it gets, is synchronized once the
/// primary has transmitted everything before that frame, and takes over
/// with nothing lost.
#[test]
fn a_forward_backup_started_after_the_primarys_first_packet_joins_the_stream_and_takes_over_without_loss() {
    let bed = TestBed::up("join", true, "primary backup");
    let dir = scratch("join");
    let (mut p, mut b, before, _) = primary_then_pings_then_backup(&bed, &dir, FORWARD);
    wait_stderr(
        &b,
        "shard 0: this backup is synchronized: it joined the primary's stream at sequence",
        5,
    );
    let sync = b.cmd("show sync");
    assert!(sync.contains("synchronized: yes"), "{sync}");
    assert_eq!(number_after(&sync, "(joined at "), before + 1, "{sync}");
    assert_eq!(
        (number_after(&sync, "gaps "), number_after(&sync, "(missing ")),
        (0, 0),
        "{sync}"
    );
    assert!(!b.stderr().contains("no longer synchronized"), "{}", b.stderr());

    kill_under_a_stream_and_expect_no_loss(&bed, &dir, &mut p, &mut b, 2);
}

/// The pair is protected again after a failover: the old primary, restarted
/// as it was, rejoins as a backup, joins the new primary's `forward` stream
/// (a function with state would need the checkpoint protocol) and takes
/// over at the next failure with nothing lost.
#[test]
fn a_restarted_old_primary_joins_as_a_synchronized_forward_backup_and_takes_over_the_next_failure_without_loss() {
    let bed = TestBed::up("again", true, "primary backup");
    let dir = scratch("again");
    let (mut p, mut b) = start_pair(&bed, &dir, FORWARD);
    p.kill9();
    assert_eq!(wait_role(&mut b, "primary", 5), 2);
    let ping = bed.run("client", &["ping", "-c", "3", "-i", "0.2", "-W", "2", "10.10.2.2"]);
    assert!(ping.status.success(), "the new primary forwards");

    let primary_cfg = cluster_config("primary", 1, 200, "primary", &["backup"]);
    let mut p2 = start_cluster_node(&bed, &dir, "primary", &primary_cfg, "b");
    assert_eq!(wait_role(&mut p2, "backup", 10), 2);
    wait_stderr(
        &p2,
        "shard 0: this backup is synchronized: it joined the primary's stream at sequence",
        5,
    );
    assert!(p2.cmd("show sync").contains("synchronized: yes"));

    kill_under_a_stream_and_expect_no_loss(&bed, &dir, &mut b, &mut p2, 3);
}

/// A NAT pair is protected again after a failover too: the old primary,
/// restarted as it was, rejoins as a backup, installs the new primary's
/// checkpoint (sessions made before and after the first failure), and takes
/// over at the next failure with a TCP connection that lived through both
/// failures still alive and nothing of a UDP stream lost.
#[test]
fn a_restarted_old_nat_primary_is_checkpointed_and_takes_over_the_next_failure_with_every_session() {
    let bed = TestBed::up("natagain", false, "primary backup");
    let dir = scratch("natagain");
    let nat = gateway_function("nat");
    let (mut p, mut b) = start_pair(&bed, &dir, &nat);
    let ping = bed.run("client", &["ping", "-c", "2", "-i", "0.2", "-W", "2", "10.10.2.2"]);
    assert!(ping.status.success(), "{}", String::from_utf8_lossy(&ping.stdout));
    let tcp = Iperf::start_with(&bed, &dir, &["-t", "9", "-b", "2M"]);
    std::thread::sleep(Duration::from_millis(1000));
    p.kill9();
    assert_eq!(wait_role(&mut b, "primary", 5), 2);

    let primary_cfg = cluster_config_with("primary", 1, 200, "primary", &["backup"], &nat);
    let mut p2 = start_cluster_node(&bed, &dir, "primary", &primary_cfg, "b");
    assert_eq!(wait_role(&mut p2, "backup", 10), 2);
    wait_stderr(
        &p2,
        "shard 0: this backup is synchronized: it installed the primary's state checkpointed at sequence",
        10,
    );
    assert!(p2.cmd("show sync").contains("synchronized: yes"));

    let stream = Stream::start(&bed, &dir, 5_000, 3.0);
    std::thread::sleep(Duration::from_millis(1000));
    b.kill9();
    assert_eq!(wait_role(&mut p2, "primary", 5), 3);
    let r = stream.finish();
    let tcp = tcp.finish();
    assert!(
        tcp.get("error").is_none(),
        "iperf3 through both failures: {}",
        tcp["error"]
    );
    assert!(u(&r, "sent") >= 14_000, "{r}");
    assert_eq!(u(&r, "lost"), 0, "no packet lost: {r}");
    assert!(p2.cmd("show sync").contains("takeovers 1  refused 0"));
}

/// Kills `primary` 1.5 s into a 4 s, 10 kpps stream: `backup` takes over
/// with `epoch` and the receiver misses nothing.
fn kill_under_a_stream_and_expect_no_loss(
    bed: &TestBed,
    dir: &Path,
    primary: &mut Lockstep,
    backup: &mut Lockstep,
    epoch: u32,
) {
    let stream = Stream::start(bed, dir, 10_000, 4.0);
    std::thread::sleep(Duration::from_millis(1500));
    primary.kill9();
    assert_eq!(wait_role(backup, "primary", 5), epoch);
    let r = stream.finish();
    assert!(u(&r, "sent") >= 30_000, "{r}");
    assert_eq!(u(&r, "lost"), 0, "no packet lost: {r}");
    let sync = backup.cmd("show sync");
    assert!(sync.contains("takeovers 1  refused 0"), "{sync}");
}

/// Frames lost on the replication link unsynchronize a backup of a
/// function with state until the primary's checkpoint; `forward`'s backup
/// counts the gap and rejoins the stream after it, and takes over later
/// with nothing lost.
#[test]
fn a_forward_backup_that_missed_frames_on_the_replication_link_rejoins_and_takes_over_without_loss() {
    let bed = TestBed::up("rejoin2", true, "primary backup");
    let dir = scratch("rejoin2");
    let (mut p, mut b) = start_pair(&bed, &dir, FORWARD);
    let stream = Stream::start(&bed, &dir, 10_000, 5.0);
    std::thread::sleep(Duration::from_millis(1000));
    bed.run("backup", &["ip", "link", "set", "rep0", "down"]);
    std::thread::sleep(Duration::from_millis(20));
    bed.run("backup", &["ip", "link", "set", "rep0", "up"]);
    std::thread::sleep(Duration::from_millis(1000));
    let sync = b.cmd("show sync");
    assert!(number_after(&sync, "gaps ") >= 1, "frames were lost: {sync}");
    assert!(sync.contains("synchronized: yes"), "{sync}");
    assert!(number_after(&sync, "(joined at ") > 1, "rejoined after the gap: {sync}");
    assert_eq!(role_of(&mut b).0, "backup");
    p.kill9();
    assert_eq!(wait_role(&mut b, "primary", 5), 2);
    let r = stream.finish();
    assert!(u(&r, "sent") >= 40_000, "{r}");
    assert_eq!(u(&r, "lost"), 0, "no packet lost: {r}");
}

/// On two workers each shard joins on its own: the backup is synchronized
/// once both are, and takes over with nothing lost.
#[test]
fn a_forward_backup_on_two_workers_started_late_joins_on_every_shard_and_takes_over_without_loss() {
    let bed = TestBed::up("join2", true, "primary backup");
    let dir = scratch("join2");
    let config = |node: &str, id: u32, prio: u8, peer: &str| cluster_config_two_workers(node, id, prio, peer, FORWARD);
    let mut p = start_cluster_node_two_workers(&bed, &dir, "primary", &config("primary", 1, 200, "backup"), "a");
    let epoch = wait_role(&mut p, "primary", 10);
    // Four TCP flows the fanout spreads over both shards.
    let tcp = Iperf::start_with(&bed, &dir, &["-t", "1", "-P", "4"]).finish();
    assert!(tcp.get("error").is_none(), "{}", tcp["error"]);
    let mut b = start_cluster_node_two_workers(&bed, &dir, "backup", &config("backup", 2, 100, "primary"), "a");
    wait_following(&mut b, epoch, 10);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let sync = loop {
        let s = b.cmd("show sync");
        if s.contains("synchronized: yes") || std::time::Instant::now() > deadline {
            break s;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(sync.contains("synchronized: yes"), "{sync}");
    assert!(sync.contains("(joined at "), "at least one shard joined: {sync}");
    kill_under_a_stream_and_expect_no_loss(&bed, &dir, &mut p, &mut b, 2);
}

/// On two workers a late NAT backup is checkpointed shard by shard: each
/// NAT shard holds the sessions of the inside hosts whose address hashes
/// to it, so the client gets a second address that lands on the other
/// shard and a TCP run from each. Both shards' sessions are installed on
/// the backup (the same external ports), and at the kill it takes over
/// with both TCP runs alive and nothing of a UDP stream lost.
#[test]
fn a_nat_backup_on_two_workers_started_late_is_checkpointed_on_every_shard_and_takes_over_every_session() {
    use dataplane::nf::nat::{Nat, NatConfig, Timeouts};
    let bed = TestBed::up("late2w", false, "primary backup");
    let dir = scratch("late2w");
    let shard_of = |ip: [u8; 4]| {
        let cfg = NatConfig {
            address: 0,
            port_lo: 1024,
            port_hi: 65535,
            max_sessions: 1,
            timeouts: Timeouts::default(),
        };
        Nat::new(cfg).for_shard(0, 2).shard_of_inside(u32::from_be_bytes(ip))
    };
    let first = shard_of([10, 10, 1, 2]);
    let other = (3..=250u8)
        .find(|h| shard_of([10, 10, 1, *h]) != first)
        .expect("an address on the other shard");
    let other_ip = format!("10.10.1.{other}");
    bed.run(
        "client",
        &["ip", "addr", "add", &format!("{other_ip}/24"), "dev", "eth0"],
    );

    let function = gateway_function("nat");
    let config =
        |node: &str, id: u32, prio: u8, peer: &str| cluster_config_two_workers(node, id, prio, peer, &function);
    let mut p = start_cluster_node_two_workers(&bed, &dir, "primary", &config("primary", 1, 200, "backup"), "a");
    let epoch = wait_role(&mut p, "primary", 10);
    let ping = bed.run("client", &["ping", "-c", "2", "-i", "0.2", "-W", "2", "10.10.2.2"]);
    assert!(ping.status.success(), "{}", String::from_utf8_lossy(&ping.stdout));
    // TCP connections that outlive the primary, opened before the backup,
    // one run per shard.
    let tcp = [
        Iperf::start_on(&bed, &dir, 5201, &["-t", "7", "-b", "2M", "-P", "2"]),
        Iperf::start_on(&bed, &dir, 5202, &["-t", "7", "-b", "2M", "-P", "2", "-B", &other_ip]),
    ];
    std::thread::sleep(Duration::from_millis(1000));
    let mut b = start_cluster_node_two_workers(&bed, &dir, "backup", &config("backup", 2, 100, "primary"), "a");
    wait_following(&mut b, epoch, 10);
    for shard in 0..2 {
        wait_stderr(
            &b,
            &format!(
                "shard {shard}: this backup is synchronized: it installed the primary's state checkpointed at sequence"
            ),
            5,
        );
    }
    let sync = b.cmd("show sync");
    assert!(sync.contains("synchronized: yes"), "{sync}");
    for shard in 0..2 {
        wait_stderr(
            &p,
            &format!("shard {shard}: checkpoint sent to the backups that asked: "),
            2,
        );
    }
    // Each shard's TCP sessions, by the external port they go out on.
    let ports_by_shard = |ls: &mut Lockstep| -> Vec<std::collections::BTreeSet<String>> {
        let text = ls.cmd("show sessions");
        text.split("  worker ")
            .skip(1)
            .map(|w| {
                w.lines()
                    .filter(|l| l.contains("10.10.2.2:520"))
                    .filter_map(|l| l.split("via :").nth(1))
                    .map(|v| v.split_whitespace().next().unwrap_or("").to_string())
                    .collect()
            })
            .collect()
    };
    let before = ports_by_shard(&mut p);
    assert_eq!(before.len(), 2, "two workers");
    assert!(
        before.iter().all(|s| s.len() >= 3),
        "each shard holds a run's connections (control and 2 streams): {before:?}"
    );
    assert_eq!(
        ports_by_shard(&mut b),
        before,
        "the backup holds both shards' translations"
    );

    let stream = Stream::start(&bed, &dir, 5_000, 3.0);
    std::thread::sleep(Duration::from_millis(1000));
    p.kill9();
    assert_eq!(wait_role(&mut b, "primary", 5), epoch + 1);
    let r = stream.finish();
    for (run, t) in tcp.into_iter().enumerate() {
        let t = t.finish();
        assert!(t.get("error").is_none(), "iperf3 run {run}: {}", t["error"]);
        assert_eq!(t["end"]["streams"].as_array().map(|a| a.len()), Some(2), "run {run}");
    }
    assert!(u(&r, "sent") >= 14_000, "{r}");
    assert_eq!(u(&r, "lost"), 0, "no packet lost: {r}");
    let sync = b.cmd("show sync");
    assert!(sync.contains("takeovers 1  refused 0"), "{sync}");
}
