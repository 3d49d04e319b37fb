//! A running node: EAL resources, ports, workers, in the order they must be
//! taken down (workers, then ports, then rings and pools; EAL last, by the
//! caller).

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crossbeam::channel::{unbounded, Sender};

use dataplane::dpdk::lcore::{self, LcoreHandle};
use dataplane::dpdk::lpm::DpdkLpm;
use dataplane::dpdk::mempool::DEFAULT_DATA_ROOM;
use dataplane::dpdk::ring::MbufRing;
use dataplane::dpdk::{Eal, Mempool, Port, PortConfig};
use dataplane::nf::{Forward, NetworkFunction, Router, Side};
use dataplane::ownership::TxOwnership;
use dataplane::replication::builder::{Encap, HEADER_DATA_ROOM};
use dataplane::replication::handoff::HandoffLedger;
use dataplane::stats::CounterSnapshot;
use dataplane::wire::MacAddr;
use dataplane::worker::{
    Announce, DataQueues, NodeSignals, ReplPath, ReplSettings, ReplSource, Steering, Worker, WorkerCmd, WorkerShared,
};

use crate::cluster::ClusterStatus;
use crate::config::{Config, FunctionKind, Role};

/// A data or replication port with the role it plays.
#[derive(Clone, Debug)]
pub struct PortRef {
    /// `inside`, `outside` or `replication`.
    pub role: &'static str,
    pub name: String,
    pub id: u16,
}

/// What the control thread, the prompt and telemetry read about the node.
pub struct NodeView {
    pub node_id: u32,
    pub priority: u8,
    pub configured_role: Role,
    pub function: FunctionKind,
    pub ports: Vec<PortRef>,
    pub workers: Vec<Arc<WorkerShared>>,
    pub lcores: Vec<u32>,
    pub ownership: Arc<TxOwnership>,
    pub started: Instant,
    /// Worker counters at the last `clear port stats`.
    pub baseline: Mutex<Vec<CounterSnapshot>>,
    pub forwarding: AtomicBool,
    /// The control plane's state, refreshed every tick (None: standalone).
    pub cluster: Mutex<Option<ClusterStatus>>,
}

impl NodeView {
    /// The role now: the control plane's when replicating.
    pub fn role_name(&self) -> String {
        match self
            .cluster
            .lock()
            .ok()
            .and_then(|c| c.as_ref().map(|c| c.role.name().to_string()))
        {
            Some(r) => r,
            None => self.configured_role.name().to_string(),
        }
    }

    /// Worker counters since the last clear, per worker.
    pub fn worker_counters(&self) -> Vec<CounterSnapshot> {
        let base = self.baseline.lock().map(|b| b.clone()).unwrap_or_default();
        self.workers
            .iter()
            .enumerate()
            .map(|(i, w)| {
                let now = w.counters.snapshot();
                match base.get(i) {
                    Some(b) => now.since(b),
                    None => now,
                }
            })
            .collect()
    }

    pub fn total_counters(&self) -> CounterSnapshot {
        let mut t = CounterSnapshot::default();
        for c in self.worker_counters() {
            t.add(&c);
        }
        t
    }

    pub fn clear_counters(&self) {
        if let Ok(mut b) = self.baseline.lock() {
            *b = self.workers.iter().map(|w| w.counters.snapshot()).collect();
        }
        for w in &self.workers {
            w.latency.reset();
        }
    }

    /// `start` / `stop` of forwarding (testpmd's meaning).
    pub fn set_forwarding(&self, on: bool) {
        self.forwarding.store(on, Ordering::Relaxed);
        for w in &self.workers {
            w.forwarding.store(on, Ordering::Relaxed);
        }
    }
}

/// The running node.
pub struct Node {
    pub view: Arc<NodeView>,
    pub quit: Arc<AtomicBool>,
    /// One command channel per worker (replicating nodes).
    pub commands: Vec<Sender<WorkerCmd>>,
    pub signals: Arc<NodeSignals>,
    handles: Vec<LcoreHandle>,
    ports: Vec<Port>,
    rings: Vec<Arc<MbufRing>>,
    pools: Vec<Arc<Mempool>>,
}

/// Slots of each shard's steering inbox: a few bursts of every other
/// shard (a full inbox drops, counted `steer_refused`).
const STEER_RING: u32 = 4096;

/// Entries of a backup's ledger of packets in transit between shards.
const HANDOFF_LEDGER: usize = 16384;

/// Everything one worker needs besides its function.
struct WorkerParts {
    shard: u16,
    data: [DataQueues; 2],
    repl: Option<ReplPath>,
    commands: Option<crossbeam::channel::Receiver<WorkerCmd>>,
    steering: Option<Steering>,
}

impl Node {
    /// Opens the ports, starts them and launches one worker per shard.
    pub fn start(eal: &Eal, cfg: &Config) -> Result<Node, String> {
        let d = &cfg.dataplane;
        let lcores = eal.worker_lcores();
        if lcores.len() < d.workers as usize {
            return Err(format!(
                "dataplane.workers = {} needs as many worker lcores, EAL has {} (give EAL e.g. -l 0-{})",
                d.workers,
                lcores.len(),
                d.workers
            ));
        }
        let lcores: Vec<u32> = lcores.into_iter().take(d.workers as usize).collect();
        let replicating = cfg.replicating();

        let pool = Arc::new(
            Mempool::new("lockstep_pkts", d.mbufs, d.mbuf_cache, DEFAULT_DATA_ROOM, -1).map_err(|e| e.to_string())?,
        );
        let mut pools = vec![pool.clone()];
        let port_conf = PortConfig {
            queues: d.workers,
            rx_desc: d.rx_desc,
            tx_desc: d.tx_desc,
            promiscuous: true,
            rx_ip_checksum: d.rx_checksum_offload,
        };
        let mut ports = Vec::new();
        let mut refs = Vec::new();
        let mut named: Vec<(&'static str, &String)> =
            vec![("inside", &cfg.ports.inside), ("outside", &cfg.ports.outside)];
        if let (true, Some(r)) = (replicating, &cfg.ports.replication) {
            named.push(("replication", r));
        }
        for (prole, name) in named {
            let mut p = Port::by_name(name).map_err(|e| format!("ports.{prole}: {e}"))?;
            p.configure(&port_conf, &pool)
                .map_err(|e| format!("ports.{prole}: {e}"))?;
            refs.push(PortRef {
                role: prole,
                name: name.clone(),
                id: p.id(),
            });
            ports.push(p);
        }
        if let [inside, outside, rep] = &ports[..] {
            let mtu = |p: &Port| p.info().map(|i| i.mtu).unwrap_or(0);
            let need = mtu(inside).max(mtu(outside)) as u32 + dataplane::replication::ENCAP_LEN as u32;
            if (mtu(rep) as u32) < need {
                if let Err(e) = rep.set_mtu(need as u16) {
                    log::warn!(
                        "ports.replication: MTU {} is below the data ports' MTU + {} = {need} and cannot be raised ({e}): make sure the replication link carries {need}-byte frames",
                        mtu(rep),
                        dataplane::replication::ENCAP_LEN
                    );
                }
            }
        }
        for p in &mut ports {
            p.start().map_err(|e| e.to_string())?;
        }

        // A replicating node owns nothing until the control plane says so.
        let ownership = Arc::new(TxOwnership::new(d.workers as usize, !replicating));
        let quit = Arc::new(AtomicBool::new(false));
        let signals = Arc::new(NodeSignals::default());
        let workers: Vec<Arc<WorkerShared>> = (0..d.workers).map(WorkerShared::new).collect();

        let mut rings = Vec::new();
        let mut commands = Vec::new();
        let mut parts = Vec::new();
        let repl_setup = if replicating {
            let headers = Arc::new(
                Mempool::new(
                    "lockstep_repl_hdr",
                    cfg.replication.header_mbufs,
                    256,
                    HEADER_DATA_ROOM,
                    -1,
                )
                .map_err(|e| e.to_string())?,
            );
            let clones = Arc::new(
                Mempool::new("lockstep_repl_cln", cfg.replication.header_mbufs, 256, 0, -1)
                    .map_err(|e| e.to_string())?,
            );
            pools.push(headers.clone());
            pools.push(clones.clone());
            if d.workers > 1 {
                for q in 0..d.workers {
                    rings.push(Arc::new(
                        MbufRing::new(&format!("ls_inbox_{q}"), 4096).map_err(|e| e.to_string())?,
                    ));
                }
            }
            Some((headers, clones))
        } else {
            None
        };
        // Several shards of a function with state: the inboxes packets are
        // steered through (their owner named by the function).
        let mut steer_rings = Vec::new();
        if d.workers > 1 && cfg.function.kind != FunctionKind::Forward {
            for q in 0..d.workers {
                steer_rings.push(Arc::new(
                    MbufRing::new(&format!("ls_steer_{q}"), STEER_RING).map_err(|e| e.to_string())?,
                ));
            }
        }
        // A backup's ledger of packets in transit between its shards.
        let handoff = (replicating && !steer_rings.is_empty()).then(|| Arc::new(HandoffLedger::new(HANDOFF_LEDGER)));
        let settings = ReplSettings {
            node_id: cfg.node.id,
            shadow: cfg.replication.shadow_ring as usize,
            window: cfg.replication.ingress_window as usize,
            keepalive_ns: cfg
                .replication
                .keepalive_us
                .map(|u| u as u64 * 1000)
                .unwrap_or(cfg.management.heartbeat_ms as u64 * 1_000_000),
            replay: cfg.replication.takeover_replay as u64,
            batch_bytes: cfg.replication.batch_bytes as usize,
            audit_ns: cfg.replication.audit_ms as u64 * 1_000_000,
            flow_window: cfg.replication.flow_window.unwrap_or(d.rx_desc as u32 / 2) as u64,
            flow_hold_ns: cfg.replication.flow_hold_us as u64 * 1000,
            checkpoint_hold_ns: cfg.replication.checkpoint_hold_ms as u64 * 1_000_000,
            announce: Announce {
                vmac: cfg.node.virtual_mac.as_deref().and_then(MacAddr::parse),
                // The router's interface addresses are the virtual IPs unless
                // the node names others.
                vips: [
                    cfg.node
                        .inside_vip
                        .as_deref()
                        .and_then(|s| s.parse::<Ipv4Addr>().ok())
                        .or_else(|| {
                            cfg.router
                                .as_ref()
                                .and_then(|r| crate::config::parse_cidr(&r.inside))
                                .map(|c| c.0)
                        }),
                    cfg.node
                        .outside_vip
                        .as_deref()
                        .and_then(|s| s.parse::<Ipv4Addr>().ok())
                        .or_else(|| {
                            cfg.router
                                .as_ref()
                                .and_then(|r| crate::config::parse_cidr(&r.outside))
                                .map(|c| c.0)
                        }),
                ],
            },
        };
        for q in 0..d.workers {
            let data = [
                DataQueues::of(&ports[Side::Inside.index()], q),
                DataQueues::of(&ports[Side::Outside.index()], q),
            ];
            let (repl, cmd_rx) = match &repl_setup {
                Some((headers, clones)) => {
                    let rep = &ports[2];
                    let (tx, rx) = unbounded();
                    commands.push(tx);
                    let path = ReplPath {
                        tx: rep.tx_queue(q),
                        source: ReplSource {
                            rx: rep.rx_queue(q),
                            inbox: rings.get(q as usize).cloned(),
                        },
                        steer: rings.iter().cloned().map(Some).collect(),
                        handoff: handoff.clone(),
                        encap: Encap {
                            dst: MacAddr::parse(&cfg.replication.group_mac).unwrap_or(MacAddr::BROADCAST),
                            src: MacAddr(rep.mac()),
                        },
                        headers: headers.clone(),
                        clones: clones.clone(),
                        pool: pool.clone(),
                        settings: settings.clone(),
                        signals: signals.clone(),
                    };
                    (Some(path), Some(rx))
                }
                None => (None, None),
            };
            parts.push(WorkerParts {
                shard: q,
                data,
                repl,
                commands: cmd_rx,
                steering: (!steer_rings.is_empty()).then(|| Steering {
                    inboxes: steer_rings.clone(),
                    pool: pool.clone(),
                }),
            });
        }

        rings.extend(steer_rings);

        // One route table for every shard (rte_lpm readers need no lock).
        let router = match cfg.function.kind {
            FunctionKind::Forward => None,
            _ => {
                let rc = Arc::new(crate::functions::router_config(cfg)?);
                let lpm =
                    Arc::new(DpdkLpm::new("lockstep_routes", &rc.routes).map_err(|e| format!("router.routes: {e}"))?);
                Some((rc, lpm))
            }
        };

        let mut handles = Vec::new();
        for (part, lcore) in parts.into_iter().zip(lcores.iter()) {
            let shared = workers[part.shard as usize].clone();
            let h = match (cfg.function.kind, &router) {
                (FunctionKind::Forward, _) => launch_worker(eal, *lcore, Forward, part, cfg, &ownership, shared, &quit),
                (_, Some((rc, lpm))) => {
                    let nf = Router::new(rc.clone(), lpm.clone()).for_shard(part.shard, d.workers);
                    // A shard that cannot have its tables stops the start
                    // like a worker that cannot launch (the others quit).
                    let nf = if cfg.nat.as_ref().is_some_and(|n| n.preallocate) {
                        let shard = part.shard;
                        nf.with_preallocated_sessions()
                            .map_err(|e| format!("nat.preallocate (shard {shard}): {e}"))
                    } else {
                        Ok(nf)
                    };
                    nf.and_then(|nf| launch_worker(eal, *lcore, nf, part, cfg, &ownership, shared, &quit))
                }
                (_, None) => Err("router configuration missing".to_string()),
            };
            match h {
                Ok(h) => handles.push(h),
                Err(e) => {
                    quit.store(true, Ordering::SeqCst);
                    return Err(e);
                }
            }
        }

        let view = Arc::new(NodeView {
            node_id: cfg.node.id,
            priority: cfg.node.priority,
            configured_role: cfg.node.role,
            function: cfg.function.kind,
            ports: refs,
            workers,
            lcores,
            ownership,
            started: Instant::now(),
            baseline: Mutex::new(Vec::new()),
            forwarding: AtomicBool::new(true),
            cluster: Mutex::new(None),
        });
        Ok(Node {
            view,
            quit,
            commands,
            signals,
            handles,
            ports,
            rings,
            pools,
        })
    }

    /// Stops the workers and waits for them. Returns the panic messages of
    /// workers that died, if any.
    pub fn shutdown_workers(&mut self) -> Vec<String> {
        self.quit.store(true, Ordering::SeqCst);
        let mut errors = Vec::new();
        for h in self.handles.drain(..) {
            let lc = h.lcore();
            if let Err(e) = h.join() {
                errors.push(format!("worker on lcore {lc} panicked: {e}"));
            }
        }
        errors
    }

    /// Stops workers, then ports, then frees rings and pools.
    pub fn shutdown(&mut self) -> Vec<String> {
        let errors = self.shutdown_workers();
        for p in &mut self.ports {
            if let Err(e) = p.close() {
                log::warn!("{e}");
            }
        }
        self.ports.clear();
        self.rings.clear();
        for pool in self.pools.drain(..) {
            let in_use = pool.in_use();
            if in_use != 0 {
                log::warn!("{}: {in_use} mbufs still in use at shutdown", pool.name());
            }
        }
        errors
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.shutdown();
    }
}

#[allow(clippy::too_many_arguments)]
fn launch_worker<F: NetworkFunction>(
    eal: &Eal,
    lcore: u32,
    nf: F,
    part: WorkerParts,
    cfg: &Config,
    ownership: &Arc<TxOwnership>,
    shared: Arc<WorkerShared>,
    quit: &Arc<AtomicBool>,
) -> Result<LcoreHandle, String> {
    let worker = Worker {
        shard: part.shard,
        nf,
        data: part.data,
        burst: cfg.dataplane.burst as usize,
        idle_sleep_us: cfg.dataplane.idle_sleep_us,
        ownership: ownership.clone(),
        shared,
        quit: quit.clone(),
        repl: part.repl,
        commands: part.commands,
        steering: part.steering,
    };
    lcore::launch(eal, lcore, move || worker.run()).map_err(|e| e.to_string())
}
