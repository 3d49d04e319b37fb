//! `/lockstep/...` DPDK telemetry commands, so `dpdk-telemetry.py` reads a
//! running node.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};

use crossbeam::channel::Sender;

use dataplane::dpdk::port::port_stats;
use dataplane::dpdk::telemetry::{register, TelValue};
use dataplane::dpdk::DpdkError;
use dataplane::nf::{DropReason, Side};
use dataplane::stats::LatencySummary;

use crate::node::NodeView;

fn u(k: &str, v: u64) -> (String, TelValue) {
    (k.to_string(), TelValue::U64(v))
}

fn s(k: &str, v: &str) -> (String, TelValue) {
    (k.to_string(), TelValue::Str(v.to_string()))
}

/// What telemetry asks of the control loop.
pub enum ControlRequest {
    Switchover(Sender<Result<String, String>>),
}

/// Registers every command; they read `view` on the telemetry thread, and
/// send what must change to the control loop through `control`.
pub fn register_all(view: Arc<NodeView>, control: Sender<ControlRequest>) -> Result<(), DpdkError> {
    let v = view.clone();
    register(
        "/lockstep/status",
        "Role, function, workers and uptime of this lockstep node",
        move |_| status(&v),
    )?;
    let v = view.clone();
    register(
        "/lockstep/stats",
        "Port and worker counters of this lockstep node; param: none",
        move |_| stats(&v),
    )?;
    let v = view;
    register(
        "/lockstep/sync",
        "Replication, roles, peers, alarms and the last takeover",
        move |_| sync(&v),
    )?;
    let control = Mutex::new(control);
    register(
        "/lockstep/switchover",
        "Planned switchover: hand over to the best synchronized backup",
        move |_| {
            let (tx, rx) = crossbeam::channel::bounded(1);
            let sent = control
                .lock()
                .map(|c| c.send(ControlRequest::Switchover(tx)).is_ok())
                .unwrap_or(false);
            let answer = if sent {
                rx.recv_timeout(std::time::Duration::from_secs(2))
                    .unwrap_or_else(|_| Err("control loop did not answer".into()))
            } else {
                Err("control loop gone".into())
            };
            match answer {
                Ok(d) => vec![s("result", "ok"), s("detail", &d)],
                Err(e) => vec![s("result", "refused"), s("detail", &e)],
            }
        },
    )?;
    Ok(())
}

fn sync(v: &NodeView) -> Vec<(String, TelValue)> {
    let mut out = vec![s("role", &v.role_name())];
    if let Ok(guard) = v.cluster.lock() {
        if let Some(c) = guard.as_ref() {
            out.push(u("epoch", c.epoch as u64));
            out.push(s("eligible", if c.eligible { "yes" } else { "no" }));
            out.push(u("takeovers", c.takeovers));
            out.push(u("takeovers_refused", c.takeovers_refused));
            out.push(u("step_downs", c.step_downs));
            out.push(u("heartbeats_sent", c.link.sent));
            out.push(u("heartbeats_received", c.link.received));
            out.push(u("heartbeats_rejected_auth", c.link.rejected_auth));
            out.push(u("heartbeats_rejected_replay", c.heartbeats_rejected));
            for (a, n, active) in &c.alarms {
                out.push(u(&format!("alarm_{}", a.name()), *n));
                out.push(s(
                    &format!("alarm_{}_active", a.name()),
                    if *active { "yes" } else { "no" },
                ));
            }
            for (p, age) in &c.peers {
                out.push((
                    format!("peer_{}", p.id),
                    TelValue::Dict(vec![
                        s("role", &format!("{:?}", p.role).to_lowercase()),
                        u("epoch", p.epoch as u64),
                        u("priority", p.priority as u64),
                        s("synced", if p.synced { "yes" } else { "no" }),
                        u("age_ms", age / 1_000_000),
                    ]),
                ));
            }
            for b in &c.backups {
                out.push((
                    format!("backup_{}_shard_{}", b.ack.node, b.shard),
                    TelValue::Dict(vec![
                        u("acked", b.ack.seq),
                        u("lag", b.lag),
                        s("synced", if b.ack.synced { "yes" } else { "no" }),
                        u("age_us", b.age_ns / 1000),
                    ]),
                ));
            }
            if let Some(t) = &c.last_takeover {
                out.push((
                    "last_takeover".to_string(),
                    TelValue::Dict(vec![
                        u("epoch", t.record.epoch as u64),
                        s("planned", if t.record.planned { "yes" } else { "no" }),
                        u("detected_ns", t.record.detected_ns),
                        u("last_heartbeat_ns", t.record.last_heartbeat_ns),
                        u("last_replication_ns", t.record.last_replication_ns),
                        u("first_egress_ns", t.first_egress_ns),
                        u("replayed", t.replayed),
                        u("unreplicated", t.unreplicated),
                    ]),
                ));
            }
        }
    }
    for (i, w) in v.workers.iter().enumerate() {
        let r = &w.repl;
        out.push((
            format!("worker_{i}"),
            TelValue::Dict(vec![
                s("mode", r.mode().map(|m| m.name()).unwrap_or("standalone")),
                u("epoch", r.epoch.load(Relaxed) as u64),
                u("last_seq", r.last_seq.load(Relaxed)),
                u("tx_done", r.tx_done.load(Relaxed)),
                s("synced", if r.synced.load(Relaxed) { "yes" } else { "no" }),
                u("joined_at", r.joined_at.load(Relaxed)),
                u("gaps", r.gaps.load(Relaxed)),
                u("missing", r.missing.load(Relaxed)),
                u("shadow", r.shadow_len.load(Relaxed)),
                u("shadow_frames", r.shadow_frames.load(Relaxed)),
                u("shadow_overflow", r.shadow_overflow.load(Relaxed)),
                u("window", r.window_len.load(Relaxed)),
                u("frames_tx", r.frames_tx.load(Relaxed)),
                u("frames_rx", r.frames_rx.load(Relaxed)),
                u("stale_epoch", r.stale_epoch.load(Relaxed)),
                u("audits", r.audits.load(Relaxed)),
                u("audit_mismatches", r.audit_mismatches.load(Relaxed)),
                u("checkpoints_started", r.checkpoints_started.load(Relaxed)),
                u("checkpoints_sent", r.checkpoints_sent.load(Relaxed)),
                u("checkpoints_abandoned", r.checkpoints_abandoned.load(Relaxed)),
                u("checkpoint_pieces", r.checkpoint_pieces.load(Relaxed)),
                u("checkpoint_last_ns", r.checkpoint_last_ns.load(Relaxed)),
                u("checkpoint_last_rounds", r.checkpoint_last_rounds.load(Relaxed)),
                u("checkpoint_last_hold_ns", r.checkpoint_last_hold_ns.load(Relaxed)),
                u("checkpoint_abandoned_why", r.checkpoint_abandoned_why.load(Relaxed)),
                u("checkpoints_installed", r.checkpoints_installed.load(Relaxed)),
                u("checkpoint_pieces_lost", r.checkpoint_pieces_lost.load(Relaxed)),
                u("checkpoint_refused", r.checkpoint_refused.load(Relaxed)),
                u("acks_tx", r.acks_tx.load(Relaxed)),
                u("acks_rx", r.acks_rx.load(Relaxed)),
                u("backup_lag", r.flow_lag.load(Relaxed)),
                u("flow_held_ns", r.flow_held_ns.load(Relaxed)),
            ]),
        ));
    }
    out
}

fn status(v: &NodeView) -> Vec<(String, TelValue)> {
    let t = v.total_counters();
    vec![
        u("node_id", v.node_id as u64),
        u("priority", v.priority as u64),
        s("role", &v.role_name()),
        s("function", v.function.name()),
        u("workers", v.workers.len() as u64),
        u("tx_queues_owned", v.ownership.owned_count() as u64),
        s(
            "forwarding",
            if v.forwarding.load(std::sync::atomic::Ordering::Relaxed) {
                "on"
            } else {
                "off"
            },
        ),
        u("rx_packets", t.rx.iter().sum()),
        u("tx_packets", t.tx.iter().sum()),
        u("drops", t.total_drops()),
        u("uptime_ms", v.started.elapsed().as_millis() as u64),
        s("version", env!("CARGO_PKG_VERSION")),
        s("build", env!("LOCKSTEP_BUILD")),
    ]
}

fn stats(v: &NodeView) -> Vec<(String, TelValue)> {
    let mut out = Vec::new();
    for p in &v.ports {
        let Ok(st) = port_stats(p.id) else { continue };
        out.push((
            format!("port_{}", p.role),
            TelValue::Dict(vec![
                u("port_id", p.id as u64),
                s("name", &p.name),
                u("rx_packets", st.ipackets),
                u("tx_packets", st.opackets),
                u("rx_bytes", st.ibytes),
                u("tx_bytes", st.obytes),
                u("rx_missed", st.imissed),
                u("rx_errors", st.ierrors),
                u("tx_errors", st.oerrors),
                u("rx_nombuf", st.rx_nombuf),
            ]),
        ));
    }
    for (i, c) in v.worker_counters().iter().enumerate() {
        let mut d = Vec::new();
        for side in Side::ALL {
            d.push(u(&format!("rx_{}", side.name()), c.rx[side.index()]));
            d.push(u(&format!("tx_{}", side.name()), c.tx[side.index()]));
        }
        d.push(u("consumed", c.consumed));
        d.push(u("fast_path", c.fast));
        d.push(u("ignored_not_owner", c.ignored_not_owner));
        d.push(u("steered_out", c.steered_out));
        d.push(u("steered_in", c.steered_in));
        d.push(u("drops", c.total_drops()));
        for r in DropReason::ALL {
            d.push(u(&format!("drop_{}", r.name()), c.drops[*r as usize]));
        }
        let lat = LatencySummary::of(&v.workers[i].latency.snapshot());
        d.push(u("latency_p50_ns", lat.p50));
        d.push(u("latency_p99_ns", lat.p99));
        d.push(u("latency_p999_ns", lat.p999));
        out.push((format!("worker_{i}"), TelValue::Dict(d)));
    }
    out
}
