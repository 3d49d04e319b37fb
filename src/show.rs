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
        let _ = writeln!(out, "  Rx-pps: {:>12.0}          Rx-bps: {:>12.0}", rx_pps, rx_bps);
        let _ = writeln!(out, "  Tx-pps: {:>12.0}          Tx-bps: {:>12.0}", tx_pps, tx_bps);
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
            let _ = writeln!(out, "Link status: {}", if i.link.up { "up" } else { "down" });
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
            let _ = writeln!(
                out,
                "RX IPv4 checksum offload: {}",
                if i.rx_ip_checksum { "on" } else { "off" }
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
    let mut out = String::from(
        "  per-burst rx->tx latency (ns)\n  worker  lcore       bursts        p50        p99      p99.9        max\n",
    );
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
            "    consumed {}  ignored_not_owner {}  steered_out {}  steered_in {}",
            c.consumed, c.ignored_not_owner, c.steered_out, c.steered_in
        );
        let _ = writeln!(
            out,
            "    fast_path {}  busy_polls {}  idle_polls {}",
            c.fast, c.busy_polls, c.idle_polls
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
  show sessions              the function's state: neighbours, NAT sessions (first 256 per worker)
  show sync                  role, epoch, peers, alarms, per-shard replication state, last takeover
  switchover                 planned switchover to the best synchronized backup (primary only)
  debug stall <ms>           make every worker sleep (tests the watchdog)
  clear port stats all       zero port and worker counters
  start                      start forwarding
  stop                       stop forwarding (workers stop polling)
  help                       this text
  quit                       stop everything and exit
";

/// `show sync`: roles, peers, alarms, each shard's replication state, the
/// last takeover.
pub fn sync_text(view: &NodeView) -> String {
    use std::sync::atomic::Ordering::Relaxed;
    let mut out = String::new();
    let cluster = view.cluster.lock().ok().and_then(|c| c.clone());
    let Some(c) = cluster else {
        return format!("  node {}: standalone (no replication)\n", view.node_id);
    };
    let _ = writeln!(
        out,
        "  node {} priority {}: {} epoch {}  (heartbeat {} ms, dead after {} ms; control thread {}, paused {} times, longest {:.1} ms)",
        view.node_id,
        view.priority,
        c.role.name(),
        c.epoch,
        c.heartbeat_ms,
        c.dead_ms,
        match c.control_rt_priority {
            Some(p) => format!("SCHED_FIFO {p}"),
            None => "at normal priority".to_string(),
        },
        c.pauses.0,
        c.pauses.1 as f64 / 1e6
    );
    let synced = view.workers.iter().all(|w| w.repl.synced.load(Relaxed));
    let _ = writeln!(
        out,
        "  synchronized: {}{}",
        if synced && c.eligible { "yes" } else { "no" },
        if c.eligible {
            ""
        } else {
            " (stepped down after fencing or a stall: not eligible until restarted)"
        }
    );
    let _ = writeln!(
        out,
        "  (a backup is synchronized on a shard when it followed the stream without a gap since sequence 1, or\n   since it joined it: router and nat by the primary's checkpoint (its state, sent in band up to a\n   SYNC_MARK at sequence S: the backup follows from S + 1), forward, which keeps no state, at its first\n   frame after a late start or a gap; either once the primary transmitted everything before; an\n   unsynchronized backup refuses to take over)"
    );
    for (p, age) in &c.peers {
        let _ = writeln!(
            out,
            "  peer {}: {:?} epoch {} priority {} synced {} last heard {:.1} ms ago",
            p.id,
            p.role,
            p.epoch,
            p.priority,
            if p.synced { "yes" } else { "no" },
            *age as f64 / 1e6
        );
    }
    for (a, n, active) in &c.alarms {
        if *n > 0 {
            let _ = writeln!(
                out,
                "  alarm {}: raised {} time(s){}",
                a.name(),
                n,
                if *active { ", ACTIVE" } else { "" }
            );
        }
    }
    let _ = writeln!(
        out,
        "  takeovers {}  refused {}  step-downs {}  heartbeats sent {} received {} rejected(auth) {}",
        c.takeovers, c.takeovers_refused, c.step_downs, c.link.sent, c.link.received, c.link.rejected_auth
    );
    for w in &view.workers {
        let r = &w.repl;
        let _ = writeln!(
            out,
            "  shard {}: {} epoch {} last_seq {} tx_done {} synced {}{} gaps {} (missing {}) shadow {} (in {} frames, overflow {}) window {} (evicted {} unmatched {}) frames tx {} rx {} keepalives tx {} rx {} stale {} audits {} (mismatched {}) checkpoints sent {}/{} (abandoned {}, pieces {}, last {:.3} ms, {} rounds, held {:.3} ms) installed {} (lost pieces {}, refused {}) acks tx {} rx {} backup lag {} held {:.1} ms",
            w.shard,
            r.mode().map(|m| m.name()).unwrap_or("standalone"),
            r.epoch.load(Relaxed),
            r.last_seq.load(Relaxed),
            r.tx_done.load(Relaxed),
            if r.synced.load(Relaxed) { "yes" } else { "no" },
            match (r.joining.load(Relaxed), r.joined_at.load(Relaxed)) {
                (true, _) => " (joining: waiting for tx_done to cover what came before)".to_string(),
                (false, 0) => String::new(),
                (false, s) => format!(" (joined at {s})"),
            },
            r.gaps.load(Relaxed),
            r.missing.load(Relaxed),
            r.shadow_len.load(Relaxed),
            r.shadow_frames.load(Relaxed),
            r.shadow_overflow.load(Relaxed),
            r.window_len.load(Relaxed),
            r.window_evicted.load(Relaxed),
            r.window_unmatched.load(Relaxed),
            r.frames_tx.load(Relaxed),
            r.frames_rx.load(Relaxed),
            r.keepalives_tx.load(Relaxed),
            r.keepalives_rx.load(Relaxed),
            r.stale_epoch.load(Relaxed),
            r.audits.load(Relaxed),
            r.audit_mismatches.load(Relaxed),
            r.checkpoints_sent.load(Relaxed),
            r.checkpoints_started.load(Relaxed),
            r.checkpoints_abandoned.load(Relaxed),
            r.checkpoint_pieces.load(Relaxed),
            r.checkpoint_last_ns.load(Relaxed) as f64 / 1e6,
            r.checkpoint_last_rounds.load(Relaxed),
            r.checkpoint_last_hold_ns.load(Relaxed) as f64 / 1e6,
            r.checkpoints_installed.load(Relaxed),
            r.checkpoint_pieces_lost.load(Relaxed),
            r.checkpoint_refused.load(Relaxed),
            r.acks_tx.load(Relaxed),
            r.acks_rx.load(Relaxed),
            r.flow_lag.load(Relaxed),
            r.flow_held_ns.load(Relaxed) as f64 / 1e6,
        );
    }
    for b in &c.backups {
        let _ = writeln!(
            out,
            "  backup node {} shard {}: acked {} ({} behind), {}, heard {:.1} ms ago",
            b.ack.node,
            b.shard,
            b.ack.seq,
            b.lag,
            if b.ack.synced {
                "synchronized"
            } else {
                "not synchronized"
            },
            b.age_ns as f64 / 1e6
        );
    }
    if let Some(t) = c.last_takeover {
        let d = t.record.detected_ns;
        let ago = |x: u64| d.saturating_sub(x) as f64 / 1e6;
        let _ = writeln!(
            out,
            "  last takeover: epoch {} ({}): last heartbeat {:.1} ms and last replication frame {:.1} ms before detection; first egress {}; {} resent from the shadow ring, {} unreplicated packets processed",
            t.record.epoch,
            if t.record.planned { "planned" } else { "failure" },
            ago(t.record.last_heartbeat_ns),
            ago(t.record.last_replication_ns),
            if t.first_egress_ns == 0 { "none yet".to_string() } else { format!("{:.3} ms after detection", t.first_egress_ns.saturating_sub(d) as f64 / 1e6) },
            t.replayed,
            t.unreplicated
        );
    }
    out
}

/// `show sessions`: asks each worker for its function's state.
pub fn sessions_text(view: &NodeView) -> String {
    use std::sync::atomic::Ordering::Relaxed;
    let mut out = String::new();
    for w in &view.workers {
        if let Ok(mut d) = w.description.lock() {
            *d = None;
        }
        w.describe_request.store(true, Relaxed);
    }
    for w in &view.workers {
        let deadline = std::time::Instant::now() + std::time::Duration::from_millis(500);
        let text = loop {
            if let Some(t) = w.description.lock().ok().and_then(|mut d| d.take()) {
                break t;
            }
            if std::time::Instant::now() > deadline {
                break "  (no answer: forwarding stopped?)\n".to_string();
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        };
        let _ = writeln!(out, "  worker {} ({}):", w.shard, view.function.name());
        out.push_str(if text.is_empty() { "  (stateless)\n" } else { &text });
    }
    out
}
