//! The `/lockstep/...` telemetry commands answer from a running node,
//! through DPDK's own `dpdk-telemetry.py`.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

const NULL_FORWARD: &str = r#"
[ports]
inside = "net_null0"
outside = "net_null1"
[dataplane]
workers = 1
idle_sleep_us = 100
[function]
kind = "forward"
"#;

fn telemetry(prefix: &str, cmd: &str) -> serde_json::Value {
    let mut child = Command::new("dpdk-telemetry.py")
        .args(["-f", prefix])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("dpdk-telemetry.py");
    {
        use std::io::Write;
        let stdin = child.stdin.as_mut().expect("stdin");
        writeln!(stdin, "{cmd}").expect("write");
    }
    let out = child.wait_with_output().expect("telemetry output");
    let text = String::from_utf8_lossy(&out.stdout);
    let json = text
        .lines()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| panic!("no JSON from telemetry: {text}"));
    let v: serde_json::Value = serde_json::from_str(json).expect("telemetry JSON");
    v[cmd].clone()
}

/// A forwarding node between two `net_null` ports, main lcore 0 and one
/// worker on lcore 1; and its file prefix.
fn null_forward_node(tag: &str, prefix: &str) -> (Lockstep, String) {
    let dir = scratch(tag);
    let prefix = format!("{prefix}-{}", std::process::id());
    let cfg = write_config(&dir, "null.toml", NULL_FORWARD);
    let mut eal = eal_base(&prefix, "0,1");
    eal.extend(
        ["--vdev", "net_null0,size=64", "--vdev", "net_null1,size=64"]
            .iter()
            .map(|s| s.to_string()),
    );
    (Lockstep::start(None, &eal, &cfg, &dir, &prefix), prefix)
}

#[test]
fn status_and_stats_answer_from_a_running_node() {
    let (mut node, prefix) = null_forward_node("telemetry", "ls-tel");
    std::thread::sleep(Duration::from_millis(300));

    let status = telemetry(&prefix, "/lockstep/status");
    assert_eq!(status["role"], "standalone");
    assert_eq!(status["function"], "forward");
    assert_eq!(status["workers"], 1);
    assert_eq!(status["tx_queues_owned"], 2);
    assert!(status["rx_packets"].as_u64().unwrap_or(0) > 0, "{status}");

    node.cmd("stop");
    std::thread::sleep(Duration::from_millis(100));
    let stats = telemetry(&prefix, "/lockstep/stats");
    let w = &stats["worker_0"];
    let inside = &stats["port_inside"];
    let outside = &stats["port_outside"];
    assert_eq!(inside["name"], "net_null0");
    // Forwarding is stopped: the worker's counters and the ports' agree.
    assert_eq!(w["rx_inside"], inside["rx_packets"], "{stats}");
    assert_eq!(w["tx_outside"], outside["tx_packets"], "{stats}");
    assert_eq!(w["drops"], 0);

    let (st, _) = node.quit(Duration::from_secs(20));
    assert!(st.success());
}

/// `show port info all` of a node whose inside port is a net_tap device
/// (which can verify IPv4 header checksums) and whose outside port is a
/// net_null (which cannot), with `dataplane` settings `extra`.
fn checksum_offload_lines(tag: &str, extra: &str) -> Vec<String> {
    let dir = scratch(tag);
    let prefix = format!("ls-{tag}-{}", std::process::id());
    let config = NULL_FORWARD
        .replace("net_null0", "net_tap0")
        .replace("[dataplane]\n", &format!("[dataplane]\n{extra}"));
    let cfg = write_config(&dir, "tap.toml", &config);
    let mut eal = eal_base(&prefix, "0,1");
    let tap = format!("net_tap0,iface=ltck{}{tag}", std::process::id() % 10_000);
    eal.extend(
        ["--vdev", &tap, "--vdev", "net_null1,size=64"]
            .iter()
            .map(|s| s.to_string()),
    );
    let mut node = Lockstep::start(None, &eal, &cfg, &dir, &prefix);
    let info = node.cmd("show port info all");
    let (st, _) = node.quit(Duration::from_secs(20));
    assert!(st.success(), "clean exit");
    info.lines()
        .filter(|l| l.starts_with("RX IPv4 checksum offload"))
        .map(str::to_string)
        .collect()
}

#[test]
fn show_port_info_says_which_ports_verify_ipv4_checksums() {
    assert_eq!(
        checksum_offload_lines("ckon", ""),
        ["RX IPv4 checksum offload: on", "RX IPv4 checksum offload: off"],
        "the tap verifies, the null device cannot"
    );
}

#[test]
fn with_rx_checksum_offload_off_no_port_is_asked_to_verify() {
    assert_eq!(
        checksum_offload_lines("ckoff", "rx_checksum_offload = false\n"),
        ["RX IPv4 checksum offload: off", "RX IPv4 checksum offload: off"]
    );
}

/// `Cpus_allowed_list` of each of `pid`'s threads named `name`.
fn cpus_of_threads(pid: u32, name: &str) -> Vec<String> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("the node's threads");
    let mut found = Vec::new();
    for t in tasks.flatten() {
        let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        if comm.trim() != name {
            continue;
        }
        let status = std::fs::read_to_string(t.path().join("status")).unwrap_or_default();
        if let Some(l) = status.lines().find(|l| l.starts_with("Cpus_allowed_list:")) {
            found.push(l["Cpus_allowed_list:".len()..].trim().to_string());
        }
    }
    found
}

#[test]
fn the_reclaim_thread_runs_on_the_main_lcores_cpu_not_a_workers() {
    let (mut node, _) = null_forward_node("reclaim-cpu", "ls-rcl");
    // Main lcore 0 on CPU 0, the worker (lcore 1) on CPU 1.
    assert_eq!(cpus_of_threads(node.pid(), "ls-reclaim"), vec!["0".to_string()]);
    assert_eq!(cpus_of_threads(node.pid(), "rte-worker-1"), vec!["1".to_string()]);
    let (st, _) = node.quit(Duration::from_secs(20));
    assert!(st.success());
}
