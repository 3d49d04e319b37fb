//! The interactive prompt (`-i`), in the manner of testpmd's.

use std::io::BufRead;

use crossbeam::channel::Sender;

use crate::cluster::Cluster;
use crate::node::NodeView;
use crate::show::{self, RateMemory};

/// What the main loop must do after a command.
#[derive(Debug, PartialEq, Eq)]
pub enum After {
    Continue,
    Quit,
}

/// Reads lines from standard input on a plain thread and sends them to the
/// control loop; EOF sends `quit`.
pub fn spawn_reader(tx: Sender<String>) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new().name("prompt".into()).spawn(move || {
        let stdin = std::io::stdin();
        for line in stdin.lock().lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                return;
            }
        }
        let _ = tx.send("quit".to_string());
    })
}

/// Runs one command line and returns its output.
pub fn execute(line: &str, view: &NodeView, cluster: Option<&mut Cluster>, mem: &mut RateMemory) -> (String, After) {
    let words: Vec<&str> = line.split_whitespace().collect();
    let out = match words.as_slice() {
        [] => String::new(),
        ["help"] => show::HELP.to_string(),
        ["quit"] | ["exit"] => return ("Stopping...\n".to_string(), After::Quit),
        ["show", "port", "stats", "all"] => show::port_stats_all(view, mem),
        ["show", "port", "info", "all"] => view.ports.iter().map(|p| show::port_info_text(view, p.id)).collect(),
        ["show", "port", "info", id] => match id.parse::<u16>() {
            Ok(id) => show::port_info_text(view, id),
            Err(_) => format!("bad port id '{id}'\n"),
        },
        ["show", "worker", "stats"] => show::worker_stats_text(view),
        ["show", "latency"] => show::latency_text(view),
        ["show", "sync"] => show::sync_text(view),
        ["show", "sessions"] => show::sessions_text(view),
        ["switchover"] => match cluster {
            Some(c) => match c.switchover() {
                Ok(s) => format!("  {s}\n"),
                Err(e) => format!("  switchover refused: {e}\n"),
            },
            None => "  standalone node: nothing to switch over to\n".to_string(),
        },
        ["debug", "stall", ms] => match (ms.parse::<u64>(), cluster) {
            (Ok(ms), Some(c)) => {
                c.stall_workers(ms);
                format!("  every worker sleeps {ms} ms\n")
            }
            (Err(_), _) => format!("bad duration '{ms}'\n"),
            (_, None) => "  standalone node: no watchdog\n".to_string(),
        },
        ["clear", "port", "stats", "all"] => {
            for p in &view.ports {
                if let Err(e) = dataplane::dpdk::port::port_stats_reset(p.id) {
                    log::warn!("port {}: {e}", p.id);
                }
            }
            view.clear_counters();
            "  port and worker statistics cleared\n".to_string()
        }
        ["start"] => {
            view.set_forwarding(true);
            "  forwarding started\n".to_string()
        }
        ["stop"] => {
            view.set_forwarding(false);
            "  forwarding stopped\n".to_string()
        }
        _ => format!("unknown command '{line}' (try 'help')\n"),
    };
    (out, After::Continue)
}
