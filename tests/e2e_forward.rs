//! End to end on the test bed: one `forward` node between `ls-client` and
//! `ls-server` on `net_af_packet` vdevs, real kernel peers, real ping and
//! iperf3. Run one at a time (`--test-threads=1`): each brings up its own
//! namespaces and a busy lockstep.

mod common;

use std::time::Duration;

use common::*;

const FORWARD: &str = r#"
[node]
role = "standalone"
[ports]
inside = "net_af_packet0"
outside = "net_af_packet1"
[dataplane]
workers = 1
burst = 32
mbufs = 8191
idle_sleep_us = 50
[function]
kind = "forward"
"#;

fn start_forward(bed: &TestBed, dir: &std::path::Path, tag: &str) -> Lockstep {
    let cfg = write_config(dir, "forward.toml", FORWARD);
    let prefix = format!("{}{tag}", bed.prefix);
    let mut eal = eal_base(&prefix, "0,1");
    eal.extend(af_packet_vdevs());
    Lockstep::start(Some(&bed.ns("primary")), &eal, &cfg, dir, &prefix)
}

#[test]
fn twenty_pings_cross_the_forward_node_with_no_loss_and_port_counters_match_the_kernel_peers() {
    let bed = TestBed::up("ping", true, "primary");
    let dir = scratch("ping");
    let mut node = start_forward(&bed, &dir, "node");
    // Warm the ARP caches so the measured window holds only what we count.
    bed.run("client", &["ping", "-c", "1", "-W", "2", "10.10.2.2"]);
    std::thread::sleep(Duration::from_millis(200));
    node.cmd("clear port stats all");
    let c_tx0 = bed.if_counter("client", "eth0", "tx_packets");
    let c_rx0 = bed.if_counter("client", "eth0", "rx_packets");
    let s_tx0 = bed.if_counter("server", "eth0", "tx_packets");
    let s_rx0 = bed.if_counter("server", "eth0", "rx_packets");

    let out = bed.run("client", &["ping", "-c", "20", "-i", "0.05", "-W", "2", "10.10.2.2"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("20 packets transmitted, 20 received, 0% packet loss"),
        "{text}"
    );

    std::thread::sleep(Duration::from_millis(300));
    let stats = parse_port_stats(&node.cmd("show port stats all"));
    let inside = stats["inside"];
    let outside = stats["outside"];
    let client_sent = bed.if_counter("client", "eth0", "tx_packets") - c_tx0;
    let client_got = bed.if_counter("client", "eth0", "rx_packets") - c_rx0;
    let server_sent = bed.if_counter("server", "eth0", "tx_packets") - s_tx0;
    let server_got = bed.if_counter("server", "eth0", "rx_packets") - s_rx0;

    assert!(
        client_sent >= 20 && server_sent >= 20,
        "client {client_sent} server {server_sent}"
    );
    assert_eq!(inside.rx_packets, client_sent, "inside RX = what the client sent");
    assert_eq!(outside.tx_packets, server_got, "outside TX = what the server received");
    assert_eq!(outside.rx_packets, server_sent, "outside RX = what the server sent");
    assert_eq!(inside.tx_packets, client_got, "inside TX = what the client received");
    assert_eq!(inside.rx_packets, outside.tx_packets);
    assert_eq!(outside.rx_packets, inside.tx_packets);
    assert_eq!(inside.rx_bytes, outside.tx_bytes);
    assert_eq!((inside.tx_errors, outside.tx_errors), (0, 0));

    let (status, _) = node.quit(Duration::from_secs(20));
    assert!(status.success());
}

#[test]
fn iperf3_tcp_run_completes_through_the_forward_node() {
    let bed = TestBed::up("iperf", true, "primary");
    let dir = scratch("iperf");
    let mut node = start_forward(&bed, &dir, "node");
    let mut server = std::process::Command::new("ip")
        .args(["netns", "exec", &bed.ns("server"), "iperf3", "-s", "-1", "-p", "5201"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("iperf3 server");
    std::thread::sleep(Duration::from_millis(500));
    node.cmd("clear port stats all");
    let out = bed.run("client", &["iperf3", "-c", "10.10.2.2", "-p", "5201", "-t", "3", "-J"]);
    let _ = server.wait();
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("iperf3 JSON");
    assert!(json.get("error").is_none(), "iperf3 error: {}", json["error"]);
    let received = json["end"]["sum_received"]["bytes"].as_u64().unwrap_or(0);
    assert!(received > 1_000_000, "received {received} bytes");

    let stats = parse_port_stats(&node.cmd("show port stats all"));
    assert_eq!(stats["inside"].rx_packets, stats["outside"].tx_packets);
    assert_eq!(stats["outside"].rx_packets, stats["inside"].tx_packets);
    assert!(
        stats["inside"].rx_bytes > received,
        "payload plus headers crossed the node"
    );
    let (status, _) = node.quit(Duration::from_secs(20));
    assert!(status.success());
}

#[test]
fn sigterm_stops_the_node_cleanly_and_leaves_nothing_behind() {
    let bed = TestBed::up("term", true, "primary");
    let dir = scratch("term");
    let mut node = start_forward(&bed, &dir, "node");
    bed.run("client", &["ping", "-c", "3", "-i", "0.1", "-W", "2", "10.10.2.2"]);
    let pid = node.pid();
    let (status, rest) = node.terminate(Duration::from_secs(20));
    assert!(status.success(), "exit status {status:?}; stderr:\n{}", node.stderr());
    assert!(rest.contains("Final statistics"), "{rest}");
    assert!(node.stderr().contains("ports closed"), "{}", node.stderr());
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists(), "process gone");
    assert!(
        !std::path::Path::new(&format!("/var/run/dpdk/{}", node.file_prefix)).exists(),
        "EAL runtime directory removed"
    );
    let huge_left: Vec<_> = std::fs::read_dir("/dev/hugepages")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(&node.file_prefix))
                .collect()
        })
        .unwrap_or_default();
    assert!(huge_left.is_empty(), "hugepage files left: {huge_left:?}");
    bed.down();
    assert!(
        bed.namespaces_left().is_empty(),
        "namespaces left: {:?}",
        bed.namespaces_left()
    );
}

#[test]
fn dpdk_dumpcap_captures_from_a_running_node_and_hugepage_files_go_with_it() {
    let hp = std::fs::read_to_string("/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages").unwrap_or_default();
    assert!(
        hp.trim().parse::<u32>().unwrap_or(0) >= 256,
        "dpdk-dumpcap needs a shared-config primary on hugepages; scripts/setup.sh reserves them"
    );
    let bed = TestBed::up("dumpcap", true, "primary");
    let dir = scratch("dumpcap");
    let cfg = write_config(&dir, "forward.toml", FORWARD);
    let prefix = format!("{}node", bed.prefix);
    // Shared config: hugepages, no --no-shconf, no --huge-unlink.
    let mut eal: Vec<String> = ["-l", "0,1", "-m", "256", "--no-pci", "--log-level=lib.eal:warning"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    eal.push(format!("--file-prefix={prefix}"));
    eal.extend(af_packet_vdevs());
    let mut node = Lockstep::start(Some(&bed.ns("primary")), &eal, &cfg, &dir, &prefix);

    let pcap = dir.join("capture.pcapng");
    let mut dumpcap = std::process::Command::new("dpdk-dumpcap")
        .args(["--file-prefix", &prefix, "-i", "net_af_packet0", "-c", "10", "-q", "-w"])
        .arg(&pcap)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("dpdk-dumpcap");
    std::thread::sleep(Duration::from_millis(1500));
    let ping = bed.run("client", &["ping", "-c", "10", "-i", "0.1", "-W", "2", "10.10.2.2"]);
    assert!(String::from_utf8_lossy(&ping.stdout).contains(" 0% packet loss"));
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while dumpcap.try_wait().expect("wait").is_none() {
        assert!(std::time::Instant::now() < deadline, "dumpcap did not finish");
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = std::process::Command::new("tshark")
        .args(["-r"])
        .arg(&pcap)
        .args([
            "-T",
            "fields",
            "-e",
            "ip.src",
            "-e",
            "ip.dst",
            "-e",
            "icmp.type",
            "-e",
            "arp.opcode",
        ])
        .output()
        .expect("tshark");
    let lines: Vec<String> = String::from_utf8_lossy(&out.stdout).lines().map(String::from).collect();
    assert_eq!(lines.len(), 10, "{lines:?}");
    // Only our pings (and the ARP that resolves the peers) crossed the port.
    let icmp = lines
        .iter()
        .filter(|l| *l == "10.10.1.2\t10.10.2.2\t8\t" || *l == "10.10.2.2\t10.10.1.2\t0\t")
        .count();
    let arp = lines.iter().filter(|l| *l == "\t\t\t1" || *l == "\t\t\t2").count();
    assert_eq!(icmp + arp, 10, "{lines:?}");
    assert!(icmp >= 6, "{lines:?}");
    let (status, _) = node.quit(Duration::from_secs(20));
    assert!(status.success());
    let left: Vec<_> = std::fs::read_dir("/dev/hugepages")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(&prefix))
                .collect()
        })
        .unwrap_or_default();
    assert!(left.is_empty(), "hugepage files left: {left:?}");
    assert!(!std::path::Path::new(&format!("/var/run/dpdk/{prefix}")).exists());
}
