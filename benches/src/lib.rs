//! Benchmark programs of lockstep, run by `scripts/bench.sh`:
//!
//! - `nat_scale`: the NAT with a million sessions — insert rate, packets per
//!   second through a full table, bytes of memory per session (pure code, no
//!   EAL, so the numbers are the function's own).
//! - `fn_cost`: the router's and the NAT's own time per packet (fast and
//!   general paths over the bench pcap's flows, no port, no mbuf): what of
//!   a function's rate is the function, what the I/O around it.
//! - `lpm`: DPDK's `rte_lpm` against the Rust table the tests use, the
//!   measurement behind the router's choice of `rte_lpm`.
//! - `backup_drain`: how many records per second a backup worker follows
//!   (the rate a primary can keep up with this backup in step).
//! - `pair`: a primary and its backup on the two cores, linked by a
//!   `net_ring`: what a synchronized pair forwards, with flow control and
//!   with the ring's own back-pressure.
//!
//! The side-by-side with `dpdk-testpmd` is `tools/compare.py`.

use std::net::Ipv4Addr;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use crossbeam::channel::Sender;
use dataplane::dpdk::mempool::DEFAULT_DATA_ROOM;
use dataplane::dpdk::ring::vdev_create;
use dataplane::dpdk::{Eal, Mempool, Port, PortConfig};
use dataplane::nf::nat::{NatConfig, Timeouts};
use dataplane::nf::{NetworkFunction, RouterConfig, Side};
use dataplane::ownership::TxOwnership;
use dataplane::replication::builder::{Encap, HEADER_DATA_ROOM};
use dataplane::wire::MacAddr;
use dataplane::worker::{
    Announce, DataQueues, NodeSignals, ReplPath, ReplSettings, ReplSource, Worker, WorkerCmd, WorkerShared,
};

/// Positional argument `i` of the command line (1 the first) as a `T`,
/// or `default` when it is missing or does not parse.
pub fn arg<T: std::str::FromStr>(i: usize, default: T) -> T {
    std::env::args().nth(i).and_then(|a| a.parse().ok()).unwrap_or(default)
}

/// The EAL of a benchmark that needs DPDK's tables but no port or
/// hugepage: one lcore, no PCI, a file prefix of its own (`ls-<prog>-<pid>`).
pub fn table_eal(prog: &str) -> Eal {
    let prefix = format!("--file-prefix=ls-{prog}-{}", std::process::id());
    Eal::init(&[
        prog,
        "-l",
        "0",
        "--no-huge",
        "-m",
        "512",
        "--no-pci",
        "--no-shconf",
        &prefix,
        "--log-level=lib.eal:error",
    ])
    .expect("EAL")
}

/// The benchmarks' virtual MAC (the pcap's and [`udp64`]'s destination).
pub const VMAC: MacAddr = MacAddr([2, 0, 0x5e, 0, 1, 1]);

/// The replication frames' addresses.
pub const ENC: Encap = Encap {
    dst: MacAddr([0x03, 0x4c, 0x53, 0, 0, 1]),
    src: MacAddr([2, 0, 0, 0, 0, 9]),
};

/// A router from 10.10.1.1/24 (inside) to 10.10.2.1/24 (outside), the
/// server 10.10.2.2 a static neighbour; with `nat`, source NAT to
/// 10.10.2.1 over ports 1024-65535.
pub fn router_config(nat: bool) -> Arc<RouterConfig> {
    let addr = [Ipv4Addr::new(10, 10, 1, 1), Ipv4Addr::new(10, 10, 2, 1)];
    Arc::new(RouterConfig {
        vmac: VMAC,
        addr,
        prefix_len: [24, 24],
        routes: RouterConfig::all_routes(addr, [24, 24], &[]),
        icmp_rate: 1000,
        arp_rate: 1000,
        max_neighbors: 1024,
        static_neighbors: vec![(Ipv4Addr::new(10, 10, 2, 2), MacAddr([2, 0, 0, 0, 2, 2]), Side::Outside)],
        nat: nat.then_some(NatConfig {
            address: u32::from(addr[1]),
            port_lo: 1024,
            port_hi: 65535,
            max_sessions: 65536,
            timeouts: Timeouts::default(),
        }),
    })
}

/// The pools a replicating benchmark worker uses.
pub struct ReplPools {
    pub pkt: Arc<Mempool>,
    pub headers: Arc<Mempool>,
    pub clones: Arc<Mempool>,
}

impl ReplPools {
    /// A node's pools for the two-core benchmarks (`pair`, `checkpoint`):
    /// 32 K packet mbufs, 4 K header and clone mbufs, named `{prefix}_*`.
    pub fn for_node(prefix: &str) -> ReplPools {
        ReplPools {
            pkt: bench_pool(&format!("{prefix}_pkt"), 32767, DEFAULT_DATA_ROOM),
            headers: bench_pool(&format!("{prefix}_hdr"), 4095, HEADER_DATA_ROOM),
            clones: bench_pool(&format!("{prefix}_cln"), 4095, 0),
        }
    }
}

/// `p` configured with [`port_config`] and started.
pub fn started(mut p: Port, pool: &Mempool) -> Port {
    p.configure_and_start(&port_config(), pool)
        .expect("configure and start");
    p
}

/// A started `net_pcap` port replaying `pcap` without end.
pub fn pcap_source(name: &str, pcap: &str, pool: &Mempool) -> Port {
    let args = format!("rx_pcap={pcap},infinite_rx=1");
    started(vdev_create(name, &args).expect("net_pcap"), pool)
}

/// A started `net_null` port that receives nothing and drops what it sends.
pub fn null_sink(name: &str, pool: &Mempool) -> Port {
    started(vdev_create(name, "no-rx=1").expect("net_null"), pool)
}

/// A benchmark's replicating worker, before it runs, and its handles.
pub struct BenchNode<F: NetworkFunction> {
    pub worker: Worker<F>,
    pub shared: Arc<WorkerShared>,
    pub quit: Arc<AtomicBool>,
    pub cmd: Sender<WorkerCmd>,
    /// TX ownership of its data queues (none at the start).
    pub ownership: Arc<TxOwnership>,
}

/// A one-shard replicating worker of node `node_id` over `data` (inside,
/// outside) and replication port `rep`, busy-polling, in backup mode until
/// a command says otherwise, with flow control `flow_window` (0: off; 1 ms
/// hold).
pub fn replicating_worker<F: NetworkFunction>(
    nf: F,
    node_id: u32,
    data: [&Port; 2],
    rep: &Port,
    pools: &ReplPools,
    flow_window: u64,
) -> BenchNode<F> {
    let shared = WorkerShared::new(0);
    let quit = Arc::new(AtomicBool::new(false));
    let ownership = Arc::new(TxOwnership::new(1, false));
    let (cmd, commands) = crossbeam::channel::unbounded();
    let worker = Worker {
        shard: 0,
        nf,
        data: [DataQueues::of(data[0], 0), DataQueues::of(data[1], 0)],
        burst: 32,
        idle_sleep_us: 0,
        ownership: ownership.clone(),
        shared: shared.clone(),
        quit: quit.clone(),
        repl: Some(ReplPath {
            tx: rep.tx_queue(0),
            source: ReplSource {
                rx: rep.rx_queue(0),
                inbox: None,
            },
            steer: Vec::new(),
            handoff: None,
            encap: ENC,
            headers: pools.headers.clone(),
            clones: pools.clones.clone(),
            pool: pools.pkt.clone(),
            settings: ReplSettings {
                node_id,
                shadow: 4096,
                window: 4096,
                keepalive_ns: 10_000_000,
                replay: 0,
                batch_bytes: 1514,
                audit_ns: 0,
                flow_window,
                flow_hold_ns: 1_000_000,
                checkpoint_hold_ns: dataplane::worker::CHECKPOINT_HOLD_NS,
                announce: Announce::default(),
            },
            signals: Arc::new(NodeSignals::default()),
        }),
        commands: Some(commands),
        steering: None,
    };
    BenchNode {
        worker,
        shared,
        quit,
        cmd,
        ownership,
    }
}

/// The EAL of a two-core benchmark (main lcore 0, one worker lcore 1),
/// hugepages unless `huge` is false; and the worker lcore.
pub fn two_lcore_eal(name: &str, huge: bool) -> (dataplane::dpdk::Eal, u32) {
    let prefix = format!("--file-prefix={name}-{}", std::process::id());
    let mut args = vec![
        name,
        "-l",
        "0,1",
        "--no-pci",
        "-m",
        "1024",
        &prefix,
        "--log-level=lib.eal:error",
    ];
    args.push(if huge { "--huge-unlink" } else { "--no-huge" });
    let eal = dataplane::dpdk::Eal::init(&args).expect("EAL init");
    let lcore = *eal.worker_lcores().first().expect("a worker lcore");
    (eal, lcore)
}

/// A mempool of `n` mbufs of `room` data bytes with a 256-mbuf lcore cache.
pub fn bench_pool(name: &str, n: u32, room: u16) -> Arc<Mempool> {
    Arc::new(Mempool::new(name, n, 256, room, -1).unwrap_or_else(|e| panic!("pool {name}: {e}")))
}

/// One queue pair of 1024 descriptors each way: every benchmark port.
pub fn port_config() -> PortConfig {
    PortConfig {
        queues: 1,
        rx_desc: 1024,
        tx_desc: 1024,
        promiscuous: false,
        rx_ip_checksum: true,
    }
}

/// The median of `v` (the upper one of an even count).
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// A linear congruential generator: the same sequence on every run.
pub struct Lcg(pub u64);

impl Lcg {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 16
    }
}

/// Resident memory of this process, bytes.
pub fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1).and_then(|p| p.parse::<u64>().ok()))
        .map(|pages| pages * 4096)
        .unwrap_or(0)
}

/// A 64-byte UDP frame (60 + FCS) to the benchmarks' virtual MAC
/// 02:00:5e:00:01:01, from `src`:`sport` to `dst`:9000, IPv4 header
/// checksum filled (the UDP checksum left 0, as UDP allows).
pub fn udp64(src: [u8; 4], sport: u16, dst: [u8; 4]) -> [u8; 60] {
    let mut f = [0u8; 60];
    f[0..6].copy_from_slice(&VMAC.0);
    f[6..12].copy_from_slice(&[2, 0, 0, 0, 1, 2]);
    f[12..14].copy_from_slice(&[8, 0]);
    f[14] = 0x45;
    f[16..18].copy_from_slice(&46u16.to_be_bytes());
    f[22] = 64;
    f[23] = 17;
    f[26..30].copy_from_slice(&src);
    f[30..34].copy_from_slice(&dst);
    f[34..36].copy_from_slice(&sport.to_be_bytes());
    f[36..38].copy_from_slice(&9000u16.to_be_bytes());
    f[38..40].copy_from_slice(&26u16.to_be_bytes());
    let c = dataplane::wire::checksum::checksum(&f[14..34]);
    f[24..26].copy_from_slice(&c.to_be_bytes());
    f
}
