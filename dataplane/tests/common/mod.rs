//! What the DPDK test binaries share: one EAL per process, pools without
//! per-lcore caches, ring-backed ports.

#![allow(dead_code)]

use std::sync::OnceLock;

use dataplane::dpdk::ring::RingPort;
use dataplane::dpdk::{Eal, Mbuf, Mempool, Port, PortConfig};

/// A 60-byte UDP frame from `sender` to the tests' virtual MAC
/// (02:00:5e:00:01:01): 10.10.1.2:4000 to 10.10.2.2:9000, TTL 64, IPv4
/// header checksum filled, the payload's first four bytes `id`.
pub fn udp_to_vmac(sender: [u8; 6], id: u32) -> Vec<u8> {
    let mut f = vec![0u8; 60];
    f[0..6].copy_from_slice(&[2, 0, 0x5e, 0, 1, 1]);
    f[6..12].copy_from_slice(&sender);
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    f[14] = 0x45;
    f[16..18].copy_from_slice(&46u16.to_be_bytes());
    f[22] = 64;
    f[23] = 17;
    f[26..30].copy_from_slice(&[10, 10, 1, 2]);
    f[30..34].copy_from_slice(&[10, 10, 2, 2]);
    let c = dataplane::wire::checksum::checksum(&f[14..34]);
    f[24..26].copy_from_slice(&c.to_be_bytes());
    f[34..36].copy_from_slice(&4000u16.to_be_bytes());
    f[36..38].copy_from_slice(&9000u16.to_be_bytes());
    f[38..40].copy_from_slice(&26u16.to_be_bytes());
    f[42..46].copy_from_slice(&id.to_be_bytes());
    f
}

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
        let eal = Eal::init(&[
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
        .expect("EAL init");
        // Never dropped: its runtime directory goes at exit instead.
        eal.remove_runtime_files_at_exit();
        eal
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
        rx_ip_checksum: true,
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
        dataplane::worker::DataQueues::of(&inside.port, 0),
        dataplane::worker::DataQueues::of(&outside.port, 0),
    ]
}

/// An mbuf of `pool` holding `bytes`.
pub fn mbuf_of(pool: &Mempool, bytes: &[u8]) -> Mbuf {
    let mut m = Mbuf::alloc(pool).expect("mbuf");
    m.append(bytes.len() as u16).expect("room").copy_from_slice(bytes);
    m
}

/// The test router: virtual MAC 02:00:5e:00:01:01, 10.10.1.1/24 inside,
/// 10.10.2.1/24 outside, connected routes only, `neighbors` configured,
/// with `nat` if given.
pub fn router_config(
    nat: Option<dataplane::nf::nat::NatConfig>,
    neighbors: Vec<(std::net::Ipv4Addr, dataplane::wire::MacAddr, dataplane::nf::Side)>,
) -> std::sync::Arc<dataplane::nf::RouterConfig> {
    use std::net::Ipv4Addr;
    let addr = [Ipv4Addr::new(10, 10, 1, 1), Ipv4Addr::new(10, 10, 2, 1)];
    std::sync::Arc::new(dataplane::nf::RouterConfig {
        vmac: dataplane::wire::MacAddr([2, 0, 0x5e, 0, 1, 1]),
        addr,
        prefix_len: [24, 24],
        routes: dataplane::nf::RouterConfig::all_routes(addr, [24, 24], &[]),
        icmp_rate: 100,
        arp_rate: 100,
        max_neighbors: 1024,
        static_neighbors: neighbors,
        nat,
    })
}

/// A NAT on the router's outside address, every port above 1023, default
/// timeouts.
pub fn nat_config(max_sessions: usize) -> dataplane::nf::nat::NatConfig {
    dataplane::nf::nat::NatConfig {
        address: u32::from(std::net::Ipv4Addr::new(10, 10, 2, 1)),
        port_lo: 1024,
        port_hi: 65535,
        max_sessions,
        timeouts: dataplane::nf::nat::Timeouts::default(),
    }
}

/// A standalone worker running `nf` over two ring ports, on its own
/// thread, until its quit flag (returned with its counters) is set.
pub fn spawn_standalone<F: dataplane::nf::NetworkFunction>(
    nf: F,
    inside: &RingPort,
    outside: &RingPort,
    owned: bool,
) -> (
    std::thread::JoinHandle<()>,
    std::sync::Arc<dataplane::worker::WorkerShared>,
    std::sync::Arc<std::sync::atomic::AtomicBool>,
) {
    let shared = dataplane::worker::WorkerShared::new(0);
    let quit = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let worker = dataplane::worker::Worker {
        shard: 0,
        nf,
        data: data_queues(inside, outside),
        burst: 32,
        idle_sleep_us: 100,
        ownership: std::sync::Arc::new(dataplane::ownership::TxOwnership::new(1, owned)),
        shared: shared.clone(),
        quit: quit.clone(),
        repl: None,
        commands: None,
        steering: None,
    };
    (std::thread::spawn(move || worker.run()), shared, quit)
}
