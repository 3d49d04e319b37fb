//! Text for the prompt and the periodic stats, in `dpdk-testpmd`'s layout.

use std::collections::HashMap;
use std::fmt::Write;
use std::time::Instant;

use dataplane::dpdk::port::{port_info, port_stats, PortStats};
use dataplane::nf::{DropReason, Side};
use dataplane::stats::LatencySummary;

use crate::node::NodeView;

/// Remembers the previous reading of each port for the throughput lines.
#[derive(Default)]
pub struct RateMemory {
    last: HashMap<u16, (Instant, PortStats)>,
}

/// `show port stats all`.
pub fn port_stats_all(view: &NodeView, mem: &mut RateMemory) -> String {
    let mut out = String::new();
    for p in &view.ports {
        let s = match port_stats(p.id) {
            Ok(s) => s,
            Err(e) => {
                let _ = writeln!(out, "  port {} ({}): {e}", p.id, p.role);
                continue;
            }
        };
        let now = Instant::now();
        let (rx_pps, tx_pps, rx_bps, tx_bps) = match mem.last.get(&p.id) {
            Some((t, prev)) => {
                let dt = now.duration_since(*t).as_secs_f64().max(1e-9);
                let d = s.since(prev);
                (
                    d.ipackets as f64 / dt,
                    d.opackets as f64 / dt,
                    d.ibytes as f64 * 8.0 / dt,
                    d.obytes as f64 * 8.0 / dt,
                )
            }
            None => (0.0, 0.0, 0.0, 0.0),
        };
        mem.last.insert(p.id, (now, s));
        let _ = writeln!(
            out,
            "\n  ######################## NIC statistics for port {} ({}: {}) ########################",
            p.id, p.role, p.name
        );
        let _ = writeln!(
            out,
            "  RX-packets: {:<10} RX-missed: {:<10} RX-bytes:  {}",
            s.ipackets, s.imissed, s.ibytes
        );
        let _ = writeln!(out, "  RX-errors: {}", s.ierrors);
        let _ = writeln!(out, "  RX-nombuf:  {}", s.rx_nombuf);
        let _ = writeln!(
            out,
            "  TX-packets: {:<10} TX-errors: {:<10} TX-bytes:  {}",
            s.opackets, s.oerrors, s.obytes
        );
        let _ = writeln!(out, "\n  Throughput (since last show)");
        let _ = writeln!(
            out,
            "  Rx-pps: {:>12.0}          Rx-bps: {:>12.0}",
            rx_pps, rx_bps
        );
        let _ = writeln!(
            out,
            "  Tx-pps: {:>12.0}          Tx-bps: {:>12.0}",
            tx_pps, tx_bps
        );
        let _ = writeln!(
            out,
            "  ############################################################################"
        );
    }
    out
}

/// `show port info <id>`.
pub fn port_info_text(view: &NodeView, id: u16) -> String {
    let Some(p) = view.ports.iter().find(|p| p.id == id) else {
        let ids: Vec<String> = view.ports.iter().map(|p| p.id.to_string()).collect();
        return format!("no port {id} (ports: {})\n", ids.join(", "));
    };
    match port_info(id) {
        Ok(i) => {
            let mac = dataplane::wire::MacAddr(i.mac);
            let mut out = String::new();
            let _ = writeln!(
                out,
                "\n********************* Infos for port {}  *********************",
                i.id
            );
            let _ = writeln!(out, "Role: {}", p.role);
            let _ = writeln!(out, "Device name: {}", i.name);
            let _ = writeln!(out, "Driver name: {}", i.driver);
            let _ = writeln!(out, "MAC address: {mac}");
            let _ = writeln!(out, "Socket id: {}", i.socket);
            let _ = writeln!(
                out,
                "Link status: {}",
                if i.link.up { "up" } else { "down" }
            );
            let _ = writeln!(out, "Link speed: {} Mbps", i.link.speed_mbps);
            let _ = writeln!(
                out,
                "Link duplex: {}",
                if i.link.full_duplex {
                    "full-duplex"
                } else {
                    "half-duplex"
                }
            );
            let _ = writeln!(out, "MTU: {}", i.mtu);
            let _ = writeln!(
                out,
                "Promiscuous mode: {}",
                if i.promiscuous { "enabled" } else { "disabled" }
            );
            let _ = writeln!(out, "Current number of RX queues: {}", i.rx_queues);
            let _ = writeln!(out, "Max possible RX queues: {}", i.max_rx_queues);
            let _ = writeln!(out, "Current number of TX queues: {}", i.tx_queues);
            let _ = writeln!(out, "Max possible TX queues: {}", i.max_tx_queues);
            out
        }
        Err(e) => format!("port {id}: {e}\n"),
    }
}

/// `show latency`: per worker, per-burst RX-to-TX latency.
pub fn latency_text(view: &NodeView) -> String {
    let mut out = String::from("  per-burst rx->tx latency (ns)\n  worker  lcore       bursts        p50        p99      p99.9        max\n");
    for (i, w) in view.workers.iter().enumerate() {
        let s = LatencySummary::of(&w.latency.snapshot());
        let lcore = view.lcores.get(i).copied().unwrap_or(0);
        let _ = writeln!(
            out,
            "  {:>6} {:>6} {:>12} {:>10} {:>10} {:>10} {:>10}",
            w.shard, lcore, s.count, s.p50, s.p99, s.p999, s.max
        );
    }
    out
}

/// `show worker stats`: per-worker counters with drops by reason.
pub fn worker_stats_text(view: &NodeView) -> String {
    let mut out = String::new();
    for (i, c) in view.worker_counters().iter().enumerate() {
        let _ = writeln!(out, "  worker {i}:");
        for side in Side::ALL {
            let _ = writeln!(
                out,
                "    {:<8} rx {:<12} tx {:<12}",
                side.name(),
                c.rx[side.index()],
                c.tx[side.index()]
            );
        }
        let _ = writeln!(
            out,
            "    consumed {}  ignored_not_owner {}",
            c.consumed, c.ignored_not_owner
        );
        let _ = writeln!(
            out,
            "    busy_polls {}  idle_polls {}",
            c.busy_polls, c.idle_polls
        );
        for r in DropReason::ALL {
            let n = c.drops[*r as usize];
            if n > 0 {
                let _ = writeln!(out, "    drop {:<22} {}", r.name(), n);
            }
        }
        let _ = writeln!(out, "    drops total {}", c.total_drops());
    }
    out
}

pub const HELP: &str = "\
commands:
  show port stats all        driver counters of every port, and throughput since the last show
  show port info <id>|all    device, driver, MAC, link, queues
  show worker stats          per-worker counters, drops by reason
  show latency               per-burst rx->tx latency percentiles per worker
  clear port stats all       zero port and worker counters
  start                      start forwarding
  stop                       stop forwarding (workers stop polling)
  help                       this text
  quit                       stop everything and exit
";
