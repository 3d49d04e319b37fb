//! `/lockstep/...` DPDK telemetry commands, so `dpdk-telemetry.py` reads a
//! running node.

use std::sync::Arc;

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

/// Registers every command; they read `view` on the telemetry thread.
pub fn register_all(view: Arc<NodeView>) -> Result<(), DpdkError> {
    let v = view.clone();
    register(
        "/lockstep/status",
        "Role, function, workers and uptime of this lockstep node",
        move |_| status(&v),
    )?;
    let v = view;
    register(
        "/lockstep/stats",
        "Port and worker counters of this lockstep node; param: none",
        move |_| stats(&v),
    )?;
    Ok(())
}

fn status(v: &NodeView) -> Vec<(String, TelValue)> {
    let t = v.total_counters();
    vec![
        u("node_id", v.node_id as u64),
        u("priority", v.priority as u64),
        s("role", v.role().name()),
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
        d.push(u("ignored_not_owner", c.ignored_not_owner));
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
