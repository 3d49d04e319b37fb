//! RX checksum offload on real vdevs: a port asks its device to verify
//! IPv4 header checksums when the device can, says whether it does, and
//! the device's verdict reaches the mbufs. (What the worker, the router
//! and the replica do with that verdict is in `replication.rs`.)
//!
//! One EAL per process (shared through `common::eal`). The tap interfaces
//! are this process's own (`lsck<pid>…`) and vanish with their port.

use std::process::Command;
use std::time::{Duration, Instant};

mod common;

use dataplane::dpdk::mempool::DEFAULT_DATA_ROOM;
use dataplane::dpdk::ring::vdev_create;
use dataplane::dpdk::{Mbuf, Port, PortConfig, RxBurst};

/// The source MAC of the frames the tests send (to tell them from what
/// the kernel itself sends on a new interface).
const SENDER: [u8; 6] = [2, 0, 0, 0, 0xc, 0x4];

/// UDP packet `id` from [`SENDER`], its IPv4 header checksum right or
/// `broken`.
fn udp(id: u32, broken: bool) -> Vec<u8> {
    let mut f = common::udp_to_vmac(SENDER, id);
    if broken {
        f[24] ^= 1;
        f[25] ^= 1;
    }
    f
}

/// The id [`udp`] gave a frame.
fn id_of(f: &[u8]) -> u32 {
    u32::from_be_bytes([f[42], f[43], f[44], f[45]])
}

/// A started net_tap port `net_tap_<tag>` on interface `lsck<pid><tag>`
/// (up), with `conf`.
fn tap(tag: &str, conf: &PortConfig, pool: &dataplane::dpdk::Mempool) -> (Port, String) {
    common::eal();
    let iface = format!("lsck{}{tag}", std::process::id() % 100_000);
    let mut port = vdev_create(&format!("net_tap_{tag}"), &format!("iface={iface}")).expect("net_tap");
    port.configure_and_start(conf, pool).expect("start");
    let up = Command::new("ip").args(["link", "set", &iface, "up"]).status();
    assert!(up.is_ok_and(|s| s.success()), "ip link set {iface} up");
    (port, iface)
}

/// Sends `frames` out of the kernel side of `iface` (into the port), with
/// scapy.
fn send(iface: &str, frames: &[Vec<u8>]) {
    let hex: Vec<String> = frames
        .iter()
        .map(|f| f.iter().map(|b| format!("{b:02x}")).collect())
        .collect();
    let script = format!(
        "from scapy.all import Raw, sendp\nfor h in {hex:?}:\n    sendp(Raw(bytes.fromhex(h)), iface={iface:?}, verbose=0)\n"
    );
    let ok = Command::new("/usr/bin/python3").args(["-c", &script]).status();
    assert!(ok.is_ok_and(|s| s.success()), "scapy sendp on {iface}");
}

/// The frames from [`SENDER`] the port receives within 10 s, until `n`.
fn received(port: &Port, n: usize) -> Vec<Mbuf> {
    let (mut out, mut burst) = (Vec::new(), RxBurst::<32>::default());
    let deadline = Instant::now() + Duration::from_secs(10);
    while out.len() < n && Instant::now() < deadline {
        port.rx_queue(0).rx_burst(&mut burst);
        while let Some(m) = burst.pop() {
            if m.data().get(6..12) == Some(&SENDER[..]) {
                out.push(m);
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    out
}

#[test]
fn a_tap_port_asked_to_verify_ipv4_checksums_marks_each_received_header_good_or_bad() {
    let pool = common::pool("tapck_on", 511, DEFAULT_DATA_ROOM);
    let (port, iface) = tap("on", &common::port_config(), &pool);
    assert!(port.rx_ip_checksum(), "net_tap can verify IPv4 header checksums");
    assert!(port.info().expect("info").rx_ip_checksum, "show port info says so");

    send(&iface, &[udp(1, false), udp(2, true)]);
    let got = received(&port, 2);
    let seen: Vec<(u32, bool)> = got.iter().map(|m| (id_of(m.data()), m.rx_ip_checksum_good())).collect();
    assert_eq!(
        seen,
        vec![(1, true), (2, false)],
        "the good header marked good, the broken one not"
    );
}

#[test]
fn a_port_told_not_to_verify_checksums_leaves_every_header_to_the_function() {
    let pool = common::pool("tapck_off", 511, DEFAULT_DATA_ROOM);
    let off = PortConfig {
        rx_ip_checksum: false,
        ..common::port_config()
    };
    let (port, iface) = tap("off", &off, &pool);
    assert!(!port.rx_ip_checksum());
    assert!(!port.info().expect("info").rx_ip_checksum);

    send(&iface, &[udp(3, false)]);
    let got = received(&port, 1);
    assert_eq!(got.len(), 1);
    assert!(!got[0].rx_ip_checksum_good(), "no verdict without the offload");
}

#[test]
fn a_device_that_cannot_verify_checksums_is_not_asked_to() {
    let pool = common::pool("nullck", 511, DEFAULT_DATA_ROOM);
    common::eal();
    let mut port = vdev_create("net_null_ck", "size=64").expect("net_null");
    port.configure_and_start(&common::port_config(), &pool).expect("start");
    assert!(!port.rx_ip_checksum(), "net_null has no RX checksum offload");
}
