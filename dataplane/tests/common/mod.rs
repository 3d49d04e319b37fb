//! What the DPDK test binaries share: one EAL per process, pools without
//! per-lcore caches, ring-backed ports.

#![allow(dead_code)]

use std::sync::OnceLock;

use dataplane::dpdk::ring::RingPort;
use dataplane::dpdk::{Eal, Mbuf, Mempool, Port, PortConfig};

/// The process's EAL (no hugepages, no shared files, a unique prefix).
pub fn eal() -> &'static Eal {
    static EAL: OnceLock<Eal> = OnceLock::new();
    EAL.get_or_init(|| {
        let exe = std::env::current_exe().ok();
        let name = exe
            .as_ref()
            .and_then(|p| p.file_stem())
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let prefix = format!(
            "--file-prefix=ls-{}-{}",
            name.split('-').next().unwrap_or("test"),
            std::process::id()
        );
        Eal::init(&[
            "dataplane-test",
            "-l",
            "0",
            "--no-huge",
            "-m",
            "256",
            "--no-pci",
            "--no-shconf",
            &prefix,
            "--log-level=lib.eal:error",
        ])
        .expect("EAL init")
    })
}

/// A pool without per-lcore cache: test threads are not EAL lcores, and a
/// cache would make `in_use()` count parked mbufs.
pub fn pool(name: &str, n: u32, data_room: u16) -> Mempool {
    eal();
    Mempool::new(name, n, 0, data_room, -1).expect("pool")
}

/// [`pool`], shared with workers.
pub fn shared_pool(name: &str, n: u32, data_room: u16) -> std::sync::Arc<Mempool> {
    std::sync::Arc::new(pool(name, n, data_room))
}

/// The replication frames' Ethernet addresses in every test node.
pub const ENC: dataplane::replication::builder::Encap = dataplane::replication::builder::Encap {
    dst: dataplane::wire::MacAddr([0x03, 0x4c, 0x53, 0, 0, 1]),
    src: dataplane::wire::MacAddr([2, 0, 0, 0, 0, 9]),
};

/// Polls `cond` every 2 ms; fails the test after 10 s, naming `what`.
pub fn wait(what: &str, cond: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !cond() {
        assert!(std::time::Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
}

pub fn port_config() -> PortConfig {
    PortConfig {
        queues: 1,
        rx_desc: 256,
        tx_desc: 256,
        promiscuous: false,
    }
}

/// Configures and starts `p` with one queue pair.
pub fn started(mut p: Port, pool: &Mempool) -> Port {
    p.configure_and_start(&port_config(), pool)
        .expect("configure and start");
    p
}

/// A started ring port; `split` keeps what it sends apart from what it
/// receives, else TX loops back to RX through one ring of `size` slots.
pub fn ring_port(name: &str, split: Option<(u32, u32)>, size: u32, pool: &Mempool) -> RingPort {
    match split {
        Some((rx, tx)) => RingPort::create_split(name, rx, tx),
        None => RingPort::create(name, size),
    }
    .and_then(|r| r.started(&port_config(), pool))
    .expect("ring port")
}

/// `n` mbufs of `len` bytes, the first byte of packet `i` set to `i`.
pub fn alloc_n(pool: &Mempool, n: usize, len: u16) -> Vec<Mbuf> {
    (0..n)
        .map(|i| {
            let mut m = Mbuf::alloc(pool).expect("mbuf");
            m.append(len).expect("room").fill(i as u8);
            m
        })
        .collect()
}

/// The data queues of a worker over two ring ports.
pub fn data_queues(inside: &RingPort, outside: &RingPort) -> [dataplane::worker::DataQueues; 2] {
    [
        dataplane::worker::DataQueues {
            rx: inside.port.rx_queue(0),
            tx: inside.port.tx_queue(0),
        },
        dataplane::worker::DataQueues {
            rx: outside.port.rx_queue(0),
            tx: outside.port.tx_queue(0),
        },
    ]
}
