//! A running node: EAL resources, ports, workers, in the order they must be
//! taken down (workers, then ports, then the pool; EAL last, by the caller).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use dataplane::dpdk::lcore::{self, LcoreHandle};
use dataplane::dpdk::mempool::DEFAULT_DATA_ROOM;
use dataplane::dpdk::{Eal, Mempool, Port, PortConfig};
use dataplane::nf::{Forward, NetworkFunction, Side};
use dataplane::ownership::TxOwnership;
use dataplane::stats::CounterSnapshot;
use dataplane::worker::{DataQueues, Worker, WorkerShared};

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
    pub role: Mutex<Role>,
    pub function: FunctionKind,
    pub ports: Vec<PortRef>,
    pub workers: Vec<Arc<WorkerShared>>,
    pub lcores: Vec<u32>,
    pub ownership: Arc<TxOwnership>,
    pub started: Instant,
    /// Worker counters at the last `clear port stats`.
    pub baseline: Mutex<Vec<CounterSnapshot>>,
    pub forwarding: AtomicBool,
}

impl NodeView {
    pub fn role(&self) -> Role {
        self.role.lock().map(|r| *r).unwrap_or(Role::Standalone)
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
    handles: Vec<LcoreHandle>,
    ports: Vec<Port>,
    pool: Option<Mempool>,
}

impl Node {
    /// Opens the ports, starts them and launches one worker per shard.
    pub fn start(eal: &Eal, cfg: &Config, role: Role) -> Result<Node, String> {
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

        let pool = Mempool::new(
            "lockstep_pkts",
            d.mbufs,
            d.mbuf_cache,
            DEFAULT_DATA_ROOM,
            -1,
        )
        .map_err(|e| e.to_string())?;

        let port_conf = PortConfig {
            queues: d.workers,
            rx_desc: d.rx_desc,
            tx_desc: d.tx_desc,
            promiscuous: true,
        };
        let mut ports = Vec::new();
        let mut refs = Vec::new();
        for (prole, name) in [
            ("inside", &cfg.ports.inside),
            ("outside", &cfg.ports.outside),
        ] {
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
        for p in &mut ports {
            p.start().map_err(|e| e.to_string())?;
        }

        let owned = matches!(role, Role::Standalone | Role::Primary);
        let ownership = Arc::new(TxOwnership::new(d.workers as usize, owned));
        let quit = Arc::new(AtomicBool::new(false));
        let workers: Vec<Arc<WorkerShared>> = (0..d.workers).map(WorkerShared::new).collect();

        let mut handles = Vec::new();
        for (q, lcore) in lcores.iter().enumerate() {
            let data = [
                DataQueues {
                    rx: ports[Side::Inside.index()].rx_queue(q as u16),
                    tx: ports[Side::Inside.index()].tx_queue(q as u16),
                },
                DataQueues {
                    rx: ports[Side::Outside.index()].rx_queue(q as u16),
                    tx: ports[Side::Outside.index()].tx_queue(q as u16),
                },
            ];
            let h = match cfg.function.kind {
                FunctionKind::Forward => launch_worker(
                    eal,
                    *lcore,
                    q as u16,
                    Forward,
                    data,
                    cfg,
                    &ownership,
                    &workers[q],
                    &quit,
                ),
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
            role: Mutex::new(role),
            function: cfg.function.kind,
            ports: refs,
            workers,
            lcores,
            ownership,
            started: Instant::now(),
            baseline: Mutex::new(Vec::new()),
            forwarding: AtomicBool::new(true),
        });
        Ok(Node {
            view,
            quit,
            handles,
            ports,
            pool: Some(pool),
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

    /// Stops workers, then ports, then frees the pool.
    pub fn shutdown(&mut self) -> Vec<String> {
        let errors = self.shutdown_workers();
        for p in &mut self.ports {
            if let Err(e) = p.close() {
                log::warn!("{e}");
            }
        }
        self.ports.clear();
        if let Some(pool) = self.pool.take() {
            let in_use = pool.in_use();
            if in_use != 0 {
                log::warn!("{in_use} mbufs still in use at shutdown");
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
    shard: u16,
    nf: F,
    data: [DataQueues; 2],
    cfg: &Config,
    ownership: &Arc<TxOwnership>,
    shared: &Arc<WorkerShared>,
    quit: &Arc<AtomicBool>,
) -> Result<LcoreHandle, String> {
    let worker = Worker {
        shard,
        nf,
        data,
        burst: cfg.dataplane.burst as usize,
        idle_sleep_us: cfg.dataplane.idle_sleep_us,
        ownership: ownership.clone(),
        shared: shared.clone(),
        quit: quit.clone(),
    };
    lcore::launch(eal, lcore, move || worker.run()).map_err(|e| e.to_string())
}
