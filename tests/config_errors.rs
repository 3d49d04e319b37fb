//! Each invalid configuration value makes lockstep exit with status 2 and a
//! message naming the field, before EAL starts (EAL would print "EAL:").

mod common;

use std::process::Command;

use common::*;

const PORTS: &str = "[ports]\ninside = \"net_null0\"\noutside = \"net_null1\"\n";
const ROUTER: &str = "[router]\ninside = \"10.10.1.1/24\"\noutside = \"10.10.2.1/24\"\n";
/// A router node up to its [router] section.
const GW: &str = "[node]\nvirtual_mac = \"02:00:5e:00:01:01\"\n[ports]\ninside = \"net_null0\"\noutside = \"net_null1\"\n[function]\nkind = \"router\"\n";

/// Runs lockstep with EAL arguments and `config`; returns (status, stderr).
fn run_with(config: &str, extra: &[&str]) -> (i32, String) {
    run_under(&[], "0", config, extra)
}

/// The same on lcores `lcores`, started by `launcher` (a command and its
/// arguments, lockstep's command line after them) when there is one.
fn run_under(launcher: &[&str], lcores: &str, config: &str, extra: &[&str]) -> (i32, String) {
    let dir = scratch("config");
    let path = write_config(&dir, &format!("c{}.toml", rand_suffix()), config);
    let mut cmd = match launcher.split_first() {
        Some((program, args)) => {
            let mut c = Command::new(program);
            c.args(args).arg(lockstep_bin());
            c
        }
        None => Command::new(lockstep_bin()),
    };
    let out = cmd
        .args(["-l", lcores, "--no-huge", "-m", "128", "--no-pci", "--no-shconf"])
        .args([
            "--file-prefix=ls-cfg-test",
            "--vdev",
            "net_null0",
            "--vdev",
            "net_null1",
            "--",
        ])
        .arg("--config")
        .arg(&path)
        .args(extra)
        .output()
        .expect("run lockstep");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

fn assert_rejected(config: &str, field: &str) {
    let (code, stderr) = run_with(config, &[]);
    assert_eq!(code, 2, "exit status; stderr:\n{stderr}");
    assert!(stderr.contains(field), "message names '{field}':\n{stderr}");
    assert!(!stderr.contains("EAL:"), "EAL must not start:\n{stderr}");
}

macro_rules! rejects {
    ($($name:ident: $text:expr => $field:literal;)*) => {
        $(
            #[test]
            fn $name() {
                let text: String = $text.into();
                assert_rejected(&text, $field);
            }
        )*
    };
}

rejects! {
    zero_burst_is_rejected: format!("{PORTS}[dataplane]\nburst = 0\n") => "dataplane.burst";
    burst_above_256_is_rejected: format!("{PORTS}[dataplane]\nburst = 257\n") => "dataplane.burst";
    zero_workers_are_rejected: format!("{PORTS}[dataplane]\nworkers = 0\n") => "dataplane.workers";
    too_few_mbufs_are_rejected: format!("{PORTS}[dataplane]\nmbufs = 100\n") => "dataplane.mbufs";
    oversized_mbuf_cache_is_rejected: format!("{PORTS}[dataplane]\nmbuf_cache = 4096\n") => "dataplane.mbuf_cache";
    rx_desc_not_power_of_two_is_rejected: format!("{PORTS}[dataplane]\nrx_desc = 1000\n") => "dataplane.rx_desc";
    tx_desc_too_small_is_rejected: format!("{PORTS}[dataplane]\ntx_desc = 16\n") => "dataplane.tx_desc";
    idle_sleep_over_a_second_is_rejected: format!("{PORTS}[dataplane]\nidle_sleep_us = 2000000\n") => "dataplane.idle_sleep_us";
    string_burst_is_rejected: format!("{PORTS}[dataplane]\nburst = \"fast\"\n") => "dataplane.burst";
    non_boolean_nat_preallocate_is_rejected: format!("{PORTS}[function]\nkind = \"nat\"\n[router]\ninside = \"10.10.1.1/24\"\noutside = \"10.10.2.1/24\"\n[nat]\npreallocate = 1\n") => "nat.preallocate";
    non_boolean_rx_checksum_offload_is_rejected: format!("{PORTS}[dataplane]\nrx_checksum_offload = \"yes\"\n") => "dataplane.rx_checksum_offload";
    unknown_dataplane_key_is_rejected: format!("{PORTS}[dataplane]\nbursts = 4\n") => "bursts";
    empty_inside_port_is_rejected: "[ports]\ninside = \"\"\noutside = \"net_null1\"\n".to_string() => "ports.inside";
    same_inside_and_outside_is_rejected: "[ports]\ninside = \"a\"\noutside = \"a\"\n".to_string() => "ports.outside";
    replication_on_a_data_port_is_rejected: format!("{PORTS}replication = \"net_null0\"\n") => "ports.replication";
    missing_ports_section_is_rejected: "[dataplane]\nburst = 8\n".to_string() => "ports";
    unknown_function_is_rejected: format!("{PORTS}[function]\nkind = \"teleport\"\n") => "function.kind";
    zero_node_id_is_rejected: format!("[node]\nid = 0\n{PORTS}") => "node.id";
    unknown_role_is_rejected: format!("[node]\nrole = \"boss\"\n{PORTS}") => "node.role";
    zero_heartbeat_is_rejected: format!("{PORTS}[management]\nheartbeat_ms = 0\n") => "management.heartbeat_ms";
    one_dead_interval_is_rejected: format!("{PORTS}[management]\ndead_intervals = 1\n") => "management.dead_intervals";
    realtime_priority_above_99_is_rejected: format!("{PORTS}[management]\nrealtime_priority = 100\n") => "management.realtime_priority";
    bad_management_address_is_rejected: format!("{PORTS}[management]\naddress = \"10.10.9.1\"\n") => "management.address";
    bad_peer_is_rejected: format!("{PORTS}[management]\npeers = [\"x\"]\n") => "management.peers[0]";
    toml_syntax_error_is_rejected: format!("{PORTS}[dataplane\n") => "line";
    router_without_router_section_is_rejected: format!("[node]\nvirtual_mac = \"02:00:5e:00:01:01\"\n{PORTS}[function]\nkind = \"router\"\n") => "router";
    router_without_virtual_mac_is_rejected: format!("{PORTS}[function]\nkind = \"router\"\n{ROUTER}") => "node.virtual_mac";
    router_inside_without_prefix_is_rejected: format!("{GW}[router]\ninside = \"10.10.1.1\"\noutside = \"10.10.2.1/24\"\n") => "router.inside";
    route_with_bad_port_is_rejected: format!("{GW}{ROUTER}routes = [{{ prefix = \"0.0.0.0/0\", via = \"10.10.2.254\", port = \"up\" }}]\n") => "router.routes[0].port";
    route_with_bad_prefix_is_rejected: format!("{GW}{ROUTER}routes = [{{ prefix = \"10.0.0.0\", port = \"inside\" }}]\n") => "router.routes[0].prefix";
    static_neighbor_with_bad_mac_is_rejected: format!("{GW}{ROUTER}neighbors = [{{ ip = \"10.10.2.2\", mac = \"zz\", port = \"outside\" }}]\n") => "router.neighbors[0].mac";
    nat_range_smaller_than_the_workers_is_rejected: format!("[node]\nvirtual_mac = \"02:00:5e:00:01:01\"\n{PORTS}[dataplane]\nworkers = 2\nmbufs = 16383\n[function]\nkind = \"nat\"\n{ROUTER}[nat]\nports = \"5000-5000\"\n") => "nat.ports";
    nat_port_range_backwards_is_rejected: format!("[node]\nvirtual_mac = \"02:00:5e:00:01:01\"\n{PORTS}[function]\nkind = \"nat\"\n{ROUTER}[nat]\nports = \"2000-1000\"\n") => "nat.ports";
    nat_zero_udp_timeout_is_rejected: format!("[node]\nvirtual_mac = \"02:00:5e:00:01:01\"\n{PORTS}[function]\nkind = \"nat\"\n{ROUTER}[nat]\nudp_timeout_s = 0\n") => "nat.udp_timeout_s";
    nat_section_for_a_router_is_rejected: format!("{GW}{ROUTER}[nat]\nports = \"1024-2048\"\n") => "nat";
    replicating_without_key_is_rejected: format!("[node]\nrole = \"primary\"\n{PORTS}replication = \"net_null2\"\n[management]\naddress = \"127.0.0.1:7000\"\npeers = [\"127.0.0.1:7001\"]\n") => "management.key";
    replicating_without_replication_port_is_rejected: format!("[node]\nrole = \"backup\"\n{PORTS}[management]\naddress = \"127.0.0.1:7000\"\npeers = [\"127.0.0.1:7001\"]\nkey = \"00112233445566778899aabbccddeeff\"\n") => "ports.replication";
    short_key_is_rejected: format!("[node]\nrole = \"primary\"\n{PORTS}replication = \"net_null2\"\n[management]\naddress = \"127.0.0.1:7000\"\npeers = [\"127.0.0.1:7001\"]\nkey = \"0011\"\n") => "management.key";
    audit_interval_over_an_hour_is_rejected: format!("{PORTS}[replication]\naudit_ms = 3600001\n") => "replication.audit_ms";
    checkpoint_hold_over_a_second_is_rejected: format!("{PORTS}[replication]\ncheckpoint_hold_ms = 1001\n") => "replication.checkpoint_hold_ms";
    bad_group_mac_is_rejected: format!("{PORTS}[replication]\ngroup_mac = \"01:02\"\n") => "replication.group_mac";
}

#[test]
fn unknown_role_flag_is_rejected_before_eal() {
    let (code, stderr) = run_with(PORTS, &["--role", "boss"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("--role"), "{stderr}");
    assert!(!stderr.contains("EAL:"));
}

#[test]
fn missing_config_file_is_rejected_before_eal() {
    let out = Command::new(lockstep_bin())
        .args(["--no-huge", "--", "--config", "/nonexistent/lockstep.toml"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(e.contains("/nonexistent/lockstep.toml") && !e.contains("EAL:"), "{e}");
}

#[test]
fn valid_config_passes_check_config_without_eal() {
    let (code, stderr) = run_with(PORTS, &["--check-config"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(!stderr.contains("EAL:"));
}

#[test]
fn nat_on_two_workers_passes_check_config() {
    let cfg = format!(
        "[node]\nvirtual_mac = \"02:00:5e:00:01:01\"\n{PORTS}[dataplane]\nworkers = 2\nmbufs = 16383\n[function]\nkind = \"nat\"\n{ROUTER}[nat]\nports = \"5000-5001\"\n"
    );
    let (code, stderr) = run_with(&cfg, &["--check-config"]);
    assert_eq!(code, 0, "{stderr}");
}

/// Not a configuration error but a resource one, caught as clearly: a
/// preallocated NAT whose tables the machine cannot give (here: an address
/// space capped at 1.5 GB, 16 M sessions needing 2.0 GB) stops the start
/// with a message naming the setting, the shard and the memory, instead of
/// aborting in an allocation.
#[test]
fn a_preallocated_nat_without_the_memory_fails_the_start_naming_the_setting() {
    let cfg = format!("{GW}{ROUTER}[nat]\nmax_sessions = 16000000\npreallocate = true\n")
        .replace("kind = \"router\"", "kind = \"nat\"");
    let (code, stderr) = run_under(&["prlimit", "--as=1500000000"], "0,1", &cfg, &[]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("nat.preallocate (shard 0): cannot have 2024 MiB for 16000000 sessions up front"),
        "{stderr}"
    );
}
