//! `lockstep [EAL options] -- --config FILE [--role ROLE] [--stats-period SECS] [-i]`
//!
//! Start-up order: parse and validate everything that can be checked without
//! DPDK (a bad config exits with status 2 before EAL starts), then EAL, the
//! pool, the ports, the workers, telemetry. Shutdown order, on `quit`,
//! SIGINT or SIGTERM: stop workers, print final stats, stop and close ports,
//! free the pool, EAL cleanup.

mod args;
mod cluster;
mod config;
mod functions;
mod node;
mod prompt;
mod show;
mod telemetry;

use std::io::Write;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use crossbeam::channel;

use args::{split_args, AppArgs};
use cluster::Cluster;
use config::{Config, Role};
use dataplane::dpdk::Eal;
use node::Node;
use show::RateMemory;
use telemetry::ControlRequest;

/// Exit status for configuration and usage errors (nothing was started).
const EXIT_CONFIG: u8 = 2;
/// Exit status for run-time failures (EAL, ports, workers).
const EXIT_RUNTIME: u8 = 1;

fn main() -> ExitCode {
    // Before any table is made: a session index freed after a growth goes
    // back to the kernel instead of staying resident in the heap.
    dataplane::dpdk::huge::keep_big_allocations_mapped();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let argv: Vec<String> = std::env::args().collect();
    let (eal_args, app_args) = split_args(&argv);
    let app = match AppArgs::try_parse_from(&app_args) {
        Ok(a) => a,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_CONFIG } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };

    let mut cfg = match Config::load(&app.config) {
        Ok(c) => c,
        Err(errs) => {
            for e in &errs {
                eprintln!("lockstep: config error in {}: {e}", app.config.display());
            }
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if let Some(r) = &app.role {
        match Role::parse(r) {
            Some(role) => cfg.node.role = role,
            None => {
                eprintln!("lockstep: --role: must be standalone, primary or backup (got '{r}')");
                return ExitCode::from(EXIT_CONFIG);
            }
        }
    }
    if let Err(errs) = cfg.validate() {
        for e in &errs {
            eprintln!("lockstep: config error in {}: {e}", app.config.display());
        }
        return ExitCode::from(EXIT_CONFIG);
    }
    if app.check_config {
        println!("lockstep: {} is valid", app.config.display());
        return ExitCode::SUCCESS;
    }

    let quit = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        if let Err(e) = signal_hook::flag::register(sig, quit.clone()) {
            eprintln!("lockstep: cannot install signal handler: {e}");
            return ExitCode::from(EXIT_RUNTIME);
        }
    }

    let eal = match Eal::init(&eal_args) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("lockstep: EAL: {e}");
            return ExitCode::from(EXIT_RUNTIME);
        }
    };
    // Started here, on the main thread that EAL has just pinned to the main
    // lcore, the reclaim thread runs there too (a thread inherits its
    // creator's CPU set), beside the control thread: never on a worker's
    // core, where freeing a table would take milliseconds from a worker
    // the scheduler had put it beside.
    dataplane::nf::reclaim::start();
    let code = run(&eal, &cfg, &app, &quit);
    drop(eal);
    code
}

/// Everything between EAL init and EAL cleanup.
fn run(eal: &Eal, cfg: &Config, app: &AppArgs, quit: &Arc<AtomicBool>) -> ExitCode {
    let mut node = match Node::start(eal, cfg) {
        Ok(n) => n,
        Err(e) => {
            eprintln!("lockstep: {e}");
            return ExitCode::from(EXIT_RUNTIME);
        }
    };
    let (ctl_tx, ctl_rx) = channel::unbounded::<ControlRequest>();
    if let Err(e) = telemetry::register_all(node.view.clone(), ctl_tx) {
        log::warn!("telemetry: {e}");
    }
    if let Err(e) = eal.pdump_init() {
        log::info!("dpdk-dumpcap unavailable ({e}); it needs a shared-config primary");
    }
    let mut cluster = if cfg.replicating() {
        match Cluster::new(cfg, node.view.clone(), node.signals.clone(), node.commands.clone()) {
            Ok(c) => Some(c),
            Err(e) => {
                eprintln!("lockstep: {e}");
                return ExitCode::from(EXIT_RUNTIME);
            }
        }
    } else {
        None
    };
    log::info!(
        "node {} ({}) running {} on {} worker(s), lcores {:?}",
        cfg.node.id,
        cfg.node.role.name(),
        cfg.function.kind.name(),
        cfg.dataplane.workers,
        node.view.lcores
    );

    let (tx, rx) = channel::unbounded::<String>();
    if app.interactive {
        if let Err(e) = prompt::spawn_reader(tx) {
            eprintln!("lockstep: prompt: {e}");
            return ExitCode::from(EXIT_RUNTIME);
        }
        print_prompt();
    }

    // Last, so that no thread created above inherits the policy.
    let rt = cfg.management.realtime_priority;
    if let Some(c) = cluster.as_mut().filter(|_| rt > 0) {
        match dataplane::dpdk::lcore::raise_current_thread_to_realtime(eal, rt) {
            Ok(()) => {
                c.set_control_rt_priority(Some(rt));
                log::info!("control thread at SCHED_FIFO priority {rt}")
            }
            Err(e) => log::warn!(
                "management.realtime_priority: {e}; the control thread stays at normal priority and may notice a dead peer late"
            ),
        }
    }

    let mut mem = RateMemory::default();
    let mut periodic = RateMemory::default();
    let period = Duration::from_secs(app.stats_period);
    let mut next_stats = Instant::now() + period;
    let mut code = ExitCode::SUCCESS;
    // The control loop: prompt lines, telemetry requests and, every
    // millisecond (sooner when a backup's primary is about to be declared
    // dead), a control-plane tick. It never busy-polls.
    loop {
        if quit.load(Ordering::Relaxed) {
            break;
        }
        let wait = cluster.as_ref().map_or(Duration::from_millis(1), |c| c.next_tick_in());
        if let Ok(line) = rx.recv_timeout(wait) {
            let (out, after) = prompt::execute(&line, &node.view, cluster.as_mut(), &mut mem);
            print!("{out}");
            if after == prompt::After::Quit {
                break;
            }
            print_prompt();
        }
        while let Ok(req) = ctl_rx.try_recv() {
            match req {
                ControlRequest::Switchover(reply) => {
                    let r = match cluster.as_mut() {
                        Some(c) => c.switchover(),
                        None => Err("standalone node: nothing to switch over to".to_string()),
                    };
                    let _ = reply.send(r);
                }
            }
        }
        if let Some(c) = cluster.as_mut() {
            c.tick();
        }
        if !period.is_zero() && Instant::now() >= next_stats {
            print!("{}", show::port_stats_all(&node.view, &mut periodic));
            let _ = std::io::stdout().flush();
            next_stats += period;
        }
    }

    if cluster.is_some() && rt > 0 {
        let _ = dataplane::dpdk::lcore::lower_current_thread_to_normal(eal);
    }
    log::info!("stopping workers");
    node.quit.store(true, Ordering::SeqCst);
    let view = node.view.clone();
    let errors = node.shutdown_workers();
    println!("\nFinal statistics:");
    print!("{}", show::port_stats_all(&view, &mut mem));
    print!("{}", show::worker_stats_text(&view));
    // The replication state at exit: a backup that refused to take over,
    // killed later, leaves why (gaps, missing records, last sequence) here.
    if view.cluster.lock().map(|c| c.is_some()).unwrap_or(false) {
        println!("\nReplication at exit:");
        print!("{}", show::sync_text(&view));
    }
    for e in &errors {
        eprintln!("lockstep: {e}");
        code = ExitCode::from(EXIT_RUNTIME);
    }
    drop(cluster);
    node.shutdown();
    log::info!("ports closed; bye");
    let _ = std::io::stdout().flush();
    code
}

fn print_prompt() {
    print!("lockstep> ");
    let _ = std::io::stdout().flush();
}
