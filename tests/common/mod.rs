//! Harness of the end-to-end tests: a test bed in network namespaces with a
//! name unique to the test (removed on drop, even when the test fails), and
//! lockstep processes driven through their interactive prompt (killed on
//! drop). Only processes started here are signalled, by PID.

#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

pub fn lockstep_bin() -> &'static str {
    env!("CARGO_BIN_EXE_lockstep")
}

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A scratch directory under target/, unique per test.
pub fn scratch(tag: &str) -> PathBuf {
    let d = repo()
        .join("target")
        .join("e2e")
        .join(format!("{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&d).expect("scratch dir");
    d
}

/// EAL arguments that need no hugepages and leave no shared files.
pub fn eal_base(prefix: &str, lcores: &str) -> Vec<String> {
    [
        "-l",
        lcores,
        "--no-huge",
        "-m",
        "512",
        "--no-pci",
        "--no-shconf",
        "--log-level=lib.eal:warning",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain(std::iter::once(format!("--file-prefix={prefix}")))
    .collect()
}

/// The namespaces and veths of scripts/testbed.sh, under a unique prefix.
pub struct TestBed {
    pub prefix: String,
    nodes: String,
}

impl TestBed {
    /// Builds the test bed; `bump` gives the endpoints on-link routes.
    pub fn up(tag: &str, bump: bool, nodes: &str) -> TestBed {
        let prefix = format!("lt{}-{}-", std::process::id() % 100000, tag);
        let bed = TestBed {
            prefix,
            nodes: nodes.to_string(),
        };
        let mut args = vec!["up"];
        if bump {
            args.push("--bump");
        }
        let out = bed.script(&args);
        assert!(
            out.status.success(),
            "testbed up: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        bed
    }

    fn script(&self, args: &[&str]) -> Output {
        Command::new(repo().join("scripts/testbed.sh"))
            .args(args)
            .env("LS_PREFIX", &self.prefix)
            .env("LS_NODES", &self.nodes)
            .output()
            .expect("run testbed.sh")
    }

    pub fn ns(&self, node: &str) -> String {
        format!("{}{}", self.prefix, node)
    }

    /// Runs a command in a namespace and waits for it.
    pub fn run(&self, node: &str, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.ns(node)])
            .args(args)
            .output()
            .expect("ip netns exec")
    }

    /// A kernel counter of an interface (`/sys/class/net/<dev>/statistics`).
    pub fn if_counter(&self, node: &str, dev: &str, counter: &str) -> u64 {
        let out = self.run(node, &["cat", &format!("/sys/class/net/{dev}/statistics/{counter}")]);
        String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or(u64::MAX)
    }

    pub fn namespaces_left(&self) -> Vec<String> {
        let out = Command::new("ip")
            .args(["netns", "list"])
            .output()
            .expect("ip netns list");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .filter(|n| n.starts_with(&self.prefix))
            .map(String::from)
            .collect()
    }

    pub fn down(&self) {
        let _ = self.script(&["down"]);
    }
}

impl Drop for TestBed {
    fn drop(&mut self) {
        self.down();
    }
}

/// A lockstep process with its interactive prompt.
pub struct Lockstep {
    child: Child,
    stdin: Option<ChildStdin>,
    out: Receiver<Vec<u8>>,
    buf: String,
    pub file_prefix: String,
    pub stderr_path: PathBuf,
    pub transcript: String,
}

pub const PROMPT: &str = "lockstep> ";

impl Lockstep {
    /// Starts `lockstep EAL -- --config <cfg> -i` inside `netns` (or in the
    /// current namespace when `None`).
    pub fn start(netns: Option<&str>, eal: &[String], config: &Path, dir: &Path, file_prefix: &str) -> Lockstep {
        let mut cmd = match netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, lockstep_bin()]);
                c
            }
            None => Command::new(lockstep_bin()),
        };
        let stderr_path = dir.join(format!("{file_prefix}.stderr"));
        let stderr = std::fs::File::create(&stderr_path).expect("stderr file");
        cmd.args(eal)
            .arg("--")
            .arg("--config")
            .arg(config)
            .arg("-i")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr));
        let mut child = cmd.spawn().expect("spawn lockstep");
        let stdin = child.stdin.take();
        let mut stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            let mut b = [0u8; 4096];
            loop {
                match stdout.read(&mut b) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if tx.send(b[..n].to_vec()).is_err() {
                            break;
                        }
                    }
                }
            }
        });
        let mut ls = Lockstep {
            child,
            stdin,
            out: rx,
            buf: String::new(),
            file_prefix: file_prefix.to_string(),
            stderr_path,
            transcript: String::new(),
        };
        if ls.read_until_prompt(Duration::from_secs(30)).is_none() {
            panic!("lockstep did not reach its prompt; stderr:\n{}", ls.stderr());
        }
        ls
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// Reads output until the next prompt; returns what came before it.
    fn read_until_prompt(&mut self, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(i) = self.buf.find(PROMPT) {
                let before = self.buf[..i].to_string();
                self.buf.drain(..i + PROMPT.len());
                return Some(before);
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            match self.out.recv_timeout(left) {
                Ok(chunk) => {
                    let s = String::from_utf8_lossy(&chunk);
                    self.transcript.push_str(&s);
                    self.buf.push_str(&s);
                }
                Err(_) => return None,
            }
        }
    }

    /// Runs a prompt command and returns its output.
    pub fn cmd(&mut self, line: &str) -> String {
        let stdin = self.stdin.as_mut().expect("stdin open");
        writeln!(stdin, "{line}").expect("write command");
        stdin.flush().expect("flush");
        match self.read_until_prompt(Duration::from_secs(20)) {
            Some(s) => s,
            None => panic!("no prompt after '{line}'; stderr:\n{}", self.stderr()),
        }
    }

    /// Sends SIGTERM and waits for the exit; returns the status and the rest
    /// of standard output.
    pub fn terminate(&mut self, timeout: Duration) -> (ExitStatus, String) {
        signal(self.pid(), "TERM");
        self.wait_exit(timeout)
    }

    /// `quit` at the prompt and waits for the exit.
    pub fn quit(&mut self, timeout: Duration) -> (ExitStatus, String) {
        if let Some(stdin) = self.stdin.as_mut() {
            let _ = writeln!(stdin, "quit");
        }
        self.wait_exit(timeout)
    }

    fn wait_exit(&mut self, timeout: Duration) -> (ExitStatus, String) {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.child.try_wait().expect("try_wait") {
                // Collect the rest of stdout.
                while let Ok(chunk) = self.out.recv_timeout(Duration::from_millis(200)) {
                    let s = String::from_utf8_lossy(&chunk);
                    self.transcript.push_str(&s);
                    self.buf.push_str(&s);
                }
                return (st, std::mem::take(&mut self.buf));
            }
            if Instant::now() > deadline {
                signal(self.pid(), "KILL");
                panic!("lockstep did not exit in {timeout:?}; stderr:\n{}", self.stderr());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn kill9(&mut self) {
        signal(self.pid(), "KILL");
        let _ = self.child.wait();
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Lockstep {
    fn drop(&mut self) {
        if self.is_running() {
            self.kill9();
        }
        // A node killed with -9 leaves its runtime directory (the telemetry
        // socket in it); the prefix is this test's own.
        let _ = std::fs::remove_dir_all(format!("/var/run/dpdk/{}", self.file_prefix));
    }
}

/// Sends a signal to one process we started, by PID.
pub fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status();
}

/// Counters of `show port stats all`, by port role (`inside`, ...).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ShownPort {
    pub rx_packets: u64,
    pub tx_packets: u64,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    pub rx_missed: u64,
    pub tx_errors: u64,
}

pub fn parse_port_stats(text: &str) -> HashMap<String, ShownPort> {
    let mut out = HashMap::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        let l = line.trim();
        if let Some(rest) = l.split("NIC statistics for port ").nth(1) {
            // "<id> (<role>: <name>) ####"
            let role = rest
                .split('(')
                .nth(1)
                .and_then(|r| r.split(':').next())
                .unwrap_or("")
                .to_string();
            out.insert(role.clone(), ShownPort::default());
            current = Some(role);
            continue;
        }
        let Some(role) = &current else { continue };
        let p = out.get_mut(role).expect("current port");
        let nums = |key: &str| -> Option<u64> {
            let i = l.find(key)?;
            l[i + key.len()..].split_whitespace().next()?.parse().ok()
        };
        if l.starts_with("RX-packets:") {
            p.rx_packets = nums("RX-packets:").unwrap_or(0);
            p.rx_missed = nums("RX-missed:").unwrap_or(0);
            p.rx_bytes = nums("RX-bytes:").unwrap_or(0);
        } else if l.starts_with("TX-packets:") {
            p.tx_packets = nums("TX-packets:").unwrap_or(0);
            p.tx_errors = nums("TX-errors:").unwrap_or(0);
            p.tx_bytes = nums("TX-bytes:").unwrap_or(0);
        }
    }
    out
}

/// Writes a config file into `dir`.
pub fn write_config(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write config");
    p
}

/// The EAL vdev arguments for a node's data ports on the test bed.
pub fn af_packet_vdevs() -> Vec<String> {
    vec![
        "--vdev".into(),
        "net_af_packet0,iface=in0,framecnt=4096".into(),
        "--vdev".into(),
        "net_af_packet1,iface=out0,framecnt=4096".into(),
    ]
}

/// The cluster key the tests use (hex).
pub const TEST_KEY: &str = "6c6f636b737465702d746573742d6b65792d30303031";

/// Management address of a test-bed node.
pub fn mgmt_addr(node: &str) -> &'static str {
    match node {
        "primary" => "10.10.9.1:7700",
        "backup" => "10.10.9.2:7700",
        "backup2" => "10.10.9.3:7700",
        _ => panic!("unknown node {node}"),
    }
}

/// The `[function]` part of a config running the router or the NAT as the
/// gateway of the test bed (10.10.1.1 and 10.10.2.1).
pub fn gateway_function(kind: &str) -> String {
    format!(
        r#"
[function]
kind = "{kind}"
[router]
inside = "10.10.1.1/24"
outside = "10.10.2.1/24"
icmp_rate = 100
"#
    )
}

/// A standalone gateway (router or nat) on the test bed.
pub fn gateway_config(kind: &str) -> String {
    format!(
        r#"
[node]
role = "standalone"
virtual_mac = "02:00:5e:00:01:01"
[ports]
inside = "net_af_packet0"
outside = "net_af_packet1"
[dataplane]
workers = 1
mbufs = 8191
idle_sleep_us = 20
{}"#,
        gateway_function(kind)
    )
}

/// The `[function]` part of a `forward` node.
pub const FORWARD: &str = "[function]\nkind = \"forward\"\n";

/// A replicating node's config on the test bed.
pub fn cluster_config(node: &str, id: u32, priority: u8, role: &str, peers: &[&str]) -> String {
    cluster_config_with(node, id, priority, role, peers, FORWARD)
}

/// Node 1 as primary (priority 200) and node 2 as its backup (priority
/// 100), running `function`, each settled in its role.
pub fn start_pair(bed: &TestBed, dir: &Path, function: &str) -> (Lockstep, Lockstep) {
    // The backup first (see `wait_following`).
    let mut b = start_pair_node(bed, dir, "backup", function);
    wait_role(&mut b, "backup", 10);
    let mut p = start_pair_node(bed, dir, "primary", function);
    let epoch = wait_role(&mut p, "primary", 10);
    wait_following(&mut b, epoch, 10);
    (p, b)
}

/// Node 1 (`primary`, priority 200) or node 2 (`backup`, priority 100) of
/// a pair running `function`, started, not yet settled in its role.
pub fn start_pair_node(bed: &TestBed, dir: &Path, node: &str, function: &str) -> Lockstep {
    let (id, priority, peer) = if node == "primary" {
        (1, 200, "backup")
    } else {
        (2, 100, "primary")
    };
    let config = cluster_config_with(node, id, priority, node, &[peer], function);
    start_cluster_node(bed, dir, node, &config, "a")
}

/// A replicating node's config with the given `[function]` (and `[router]`) part.
pub fn cluster_config_with(node: &str, id: u32, priority: u8, role: &str, peers: &[&str], function: &str) -> String {
    let peers: Vec<String> = peers.iter().map(|p| format!("\"{}\"", mgmt_addr(p))).collect();
    format!(
        r#"
[node]
id = {id}
priority = {priority}
role = "{role}"
virtual_mac = "02:00:5e:00:01:01"
[ports]
inside = "net_af_packet0"
outside = "net_af_packet1"
replication = "net_af_packet2"
[dataplane]
workers = 1
burst = 32
mbufs = 32767
idle_sleep_us = 20
{function}
[management]
address = "{addr}"
peers = [{peers}]
heartbeat_ms = 10
dead_intervals = 3
key = "{TEST_KEY}"
[replication]
shadow_ring = 2048
ingress_window = 8192
"#,
        addr = mgmt_addr(node),
        peers = peers.join(", ")
    )
}

/// Starts a replicating node `node` of the test bed with two workers:
/// `config` must say `workers = 2`. Every port gets two queue pairs (the
/// kernel's packet fanout spreads flows over them by hash); the main lcore
/// and the second worker share CPU 0.
pub fn start_cluster_node_two_workers(bed: &TestBed, dir: &Path, node: &str, config: &str, tag: &str) -> Lockstep {
    let cfg = write_config(dir, &format!("{node}-{tag}.toml"), config);
    let prefix = format!("{}{node}-{tag}", bed.prefix);
    let eal = eal_two_workers(&prefix, &["in0", "out0", "rep0"]);
    Lockstep::start(Some(&bed.ns(node)), &eal, &cfg, dir, &prefix)
}

/// EAL arguments for two workers: lcore 0 (main) and 2 on CPU 0, lcore 1
/// on CPU 1; `net_af_packet<i>` on each of `devs` with two queue pairs.
pub fn eal_two_workers(prefix: &str, devs: &[&str]) -> Vec<String> {
    let mut eal: Vec<String> = eal_base(prefix, "0,1").into_iter().skip(2).collect();
    eal.splice(0..0, ["--lcores".to_string(), "0@0,1@1,2@0".to_string()]);
    for (i, dev) in devs.iter().enumerate() {
        eal.push("--vdev".into());
        eal.push(format!("net_af_packet{i},iface={dev},framecnt=4096,qpairs=2"));
    }
    eal
}

/// `cluster_config_with` for two workers (and the mbufs they need), node
/// `node` with `peer`, its role as its name says.
pub fn cluster_config_two_workers(node: &str, id: u32, priority: u8, peer: &str, function: &str) -> String {
    cluster_config_with(node, id, priority, node, &[peer], function)
        .replace("workers = 1", "workers = 2")
        .replace("mbufs = 32767", "mbufs = 65535")
}

/// Starts a replicating node `node` of the test bed.
pub fn start_cluster_node(bed: &TestBed, dir: &Path, node: &str, config: &str, tag: &str) -> Lockstep {
    let cfg = write_config(dir, &format!("{node}-{tag}.toml"), config);
    let prefix = format!("{}{node}-{tag}", bed.prefix);
    let mut eal = eal_base(&prefix, "0,1");
    eal.extend(af_packet_vdevs());
    eal.push("--vdev".into());
    eal.push("net_af_packet2,iface=rep0,framecnt=4096".into());
    Lockstep::start(Some(&bed.ns(node)), &eal, &cfg, dir, &prefix)
}

/// (role, epoch) from `show sync`.
pub fn role_of(ls: &mut Lockstep) -> (String, u32) {
    let text = ls.cmd("show sync");
    let line = text
        .lines()
        .find(|l| l.contains(" priority ") && l.contains(" epoch "))
        .unwrap_or("");
    // "  node 1 priority 200: primary epoch 1  (heartbeat ..."
    let after = line.split(": ").nth(1).unwrap_or("");
    let mut w = after.split_whitespace();
    let role = w.next().unwrap_or("").to_string();
    let epoch = w.nth(1).and_then(|e| e.parse().ok()).unwrap_or(0);
    (role, epoch)
}

/// How many times `show sync` says an alarm was raised.
pub fn alarm_count(ls: &mut Lockstep, alarm: &str) -> u64 {
    let text = ls.cmd("show sync");
    text.lines()
        .find_map(|l| l.trim().strip_prefix(&format!("alarm {alarm}: raised ")))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// Waits until `role_of(ls)` is `role`, or panics after `secs`.
pub fn wait_role(ls: &mut Lockstep, role: &str, secs: u64) -> u32 {
    wait_role_where(ls, secs, &format!("become {role}"), |r, _| r == role)
}

/// Waits until the backup `ls` follows the primary of `epoch`, or panics
/// after `secs`.
///
/// Tests start a pair backup first, so it follows the stream from sequence
/// 1 (a backup started later must first be checkpointed, or for `forward`
/// join the stream: tests of those say so). A backup takes over only from
/// a primary it has heard.
pub fn wait_following(ls: &mut Lockstep, epoch: u32, secs: u64) {
    wait_role_where(ls, secs, &format!("follow the primary of epoch {epoch}"), |r, e| {
        r == "backup" && e == epoch
    });
}

/// Polls `role_of(ls)` until `ok(role, epoch)`; returns the epoch, or
/// panics after `secs` saying the node never did `what`.
fn wait_role_where(ls: &mut Lockstep, secs: u64, what: &str, ok: impl Fn(&str, u32) -> bool) -> u32 {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let (r, e) = role_of(ls);
        if ok(&r, e) {
            return e;
        }
        assert!(
            Instant::now() < deadline,
            "node never did {what} (is {r} of epoch {e}); stderr:\n{}",
            ls.stderr()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until the log of `ls` holds `needle`, or panics after `secs`.
pub fn wait_stderr(ls: &Lockstep, needle: &str, secs: u64) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !ls.stderr().contains(needle) {
        assert!(Instant::now() < deadline, "never logged {needle:?}:\n{}", ls.stderr());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The UDP stream of scripts/udpstream.py between client and server.
pub struct Stream {
    recv: Child,
    send: Child,
    pub report: PathBuf,
    sent: PathBuf,
}

impl Stream {
    /// Starts the receiver on ls-server and a sender at `rate` pps for
    /// `seconds` on ls-client.
    pub fn start(bed: &TestBed, dir: &Path, rate: u32, seconds: f64) -> Stream {
        let report = dir.join("stream-report.json");
        let sent = dir.join("stream-sent.json");
        let _ = std::fs::remove_file(&report);
        let _ = std::fs::remove_file(&sent);
        let script = repo().join("scripts/udpstream.py");
        let recv = Command::new("ip")
            .args(["netns", "exec", &bed.ns("server"), "python3"])
            .arg(&script)
            .args(["recv", "9000", "--idle", "2", "--out"])
            .arg(&report)
            .arg("--sent")
            .arg(&sent)
            .stdout(Stdio::null())
            .spawn()
            .expect("receiver");
        std::thread::sleep(Duration::from_millis(300));
        let out = std::fs::File::create(&sent).expect("sent file");
        let send = Command::new("ip")
            .args(["netns", "exec", &bed.ns("client"), "python3"])
            .arg(&script)
            .args([
                "send",
                "10.10.2.2",
                "9000",
                "--rate",
                &rate.to_string(),
                "--seconds",
                &seconds.to_string(),
            ])
            .stdout(Stdio::from(out))
            .spawn()
            .expect("sender");
        Stream {
            recv,
            send,
            report,
            sent,
        }
    }

    /// Waits for both ends and returns the receiver's report.
    pub fn finish(mut self) -> serde_json::Value {
        let _ = self.send.wait();
        let _ = self.recv.wait();
        let text = std::fs::read_to_string(&self.report).unwrap_or_default();
        let _ = &self.sent;
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("no stream report: '{text}'"))
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        for c in [&mut self.send, &mut self.recv] {
            if matches!(c.try_wait(), Ok(None)) {
                signal(c.id(), "KILL");
                let _ = c.wait();
            }
        }
    }
}

/// An iperf3 TCP run from client to server, in the background.
pub struct Iperf {
    server: Child,
    client: Child,
    out: PathBuf,
    /// When the client was started: its timed run ends no earlier than
    /// this plus `-t`.
    pub client_started: std::time::SystemTime,
}

impl Iperf {
    /// A TCP run of `seconds` at 200 Mbit/s.
    pub fn start(bed: &TestBed, dir: &Path, seconds: u32) -> Iperf {
        let t = seconds.to_string();
        Iperf::start_with(bed, dir, &["-t", &t, "-b", "200M"])
    }

    /// A run with the client options `args` (`-P`, `-t`, `-b`, `-u` ...).
    pub fn start_with(bed: &TestBed, dir: &Path, args: &[&str]) -> Iperf {
        Iperf::start_on(bed, dir, 5201, args)
    }

    /// The same with the server on `port` (two runs at once need two).
    pub fn start_on(bed: &TestBed, dir: &Path, port: u16, args: &[&str]) -> Iperf {
        let port = port.to_string();
        let server = Command::new("ip")
            .args(["netns", "exec", &bed.ns("server"), "iperf3", "-s", "-1", "-p", &port])
            .stdout(Stdio::null())
            .spawn()
            .expect("iperf3 server");
        std::thread::sleep(Duration::from_millis(400));
        let out = dir.join(format!("iperf3-{port}.json"));
        let f = std::fs::File::create(&out).expect("iperf3 out");
        let client_started = std::time::SystemTime::now();
        let client = Command::new("ip")
            .args([
                "netns",
                "exec",
                &bed.ns("client"),
                "iperf3",
                "-c",
                "10.10.2.2",
                "-p",
                &port,
                "-J",
            ])
            .args(args)
            .stdout(Stdio::from(f))
            .spawn()
            .expect("iperf3 client");
        Iperf {
            server,
            client,
            out,
            client_started,
        }
    }

    /// Waits; returns the client's JSON. A server still waiting 5 s after
    /// its client ended (the client never reached it) is killed, so a
    /// broken path fails the test instead of hanging it.
    pub fn finish(mut self) -> serde_json::Value {
        let _ = self.client.wait();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while matches!(self.server.try_wait(), Ok(None)) && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        if matches!(self.server.try_wait(), Ok(None)) {
            signal(self.server.id(), "KILL");
        }
        let _ = self.server.wait();
        let text = std::fs::read_to_string(&self.out).unwrap_or_default();
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("iperf3 gave no JSON: '{text}'"))
    }
}

impl Drop for Iperf {
    fn drop(&mut self) {
        for c in [&mut self.client, &mut self.server] {
            if matches!(c.try_wait(), Ok(None)) {
                signal(c.id(), "KILL");
                let _ = c.wait();
            }
        }
    }
}
