//! The node's TOML configuration. Every value is validated before EAL
//! starts; an error names the field (`dataplane.burst`, ...) and lockstep
//! exits with status 2.

use std::fmt;
use std::path::Path;

use serde::Deserialize;

use dataplane::worker::MAX_BURST;

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub node: NodeSection,
    pub ports: PortsSection,
    #[serde(default)]
    pub dataplane: DataplaneSection,
    #[serde(default)]
    pub function: FunctionSection,
    #[serde(default)]
    pub management: ManagementSection,
    #[serde(default)]
    pub replication: ReplicationSection,
    #[serde(default)]
    pub router: Option<RouterSection>,
    #[serde(default)]
    pub nat: Option<NatSection>,
}

/// The router's interfaces and routes (`function.kind = "router"` or `"nat"`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouterSection {
    /// Inside interface address, CIDR (the inside virtual IP).
    pub inside: String,
    /// Outside interface address, CIDR (the outside virtual IP).
    pub outside: String,
    /// Routes beyond the two connected subnets.
    #[serde(default)]
    pub routes: Vec<RouteEntry>,
    /// ICMP errors per second (time exceeded, unreachable).
    #[serde(default = "default_icmp_rate")]
    pub icmp_rate: u32,
    /// ARP requests per second.
    #[serde(default = "default_icmp_rate")]
    pub arp_rate: u32,
    #[serde(default = "default_max_neighbors")]
    pub max_neighbors: u32,
    /// Neighbours known without ARP (static entries).
    #[serde(default)]
    pub neighbors: Vec<NeighborEntry>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NeighborEntry {
    pub ip: String,
    pub mac: String,
    /// `inside` or `outside`.
    pub port: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteEntry {
    /// `a.b.c.d/len`
    pub prefix: String,
    /// Next hop (omit for a directly connected destination).
    #[serde(default)]
    pub via: Option<String>,
    /// `inside` or `outside`.
    pub port: String,
}

/// Source NAT of the inside to the outside (`function.kind = "nat"`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatSection {
    /// Address sessions leave with (default: the router's outside address).
    #[serde(default)]
    pub address: Option<String>,
    /// External port range, `lo-hi`.
    #[serde(default = "default_nat_ports")]
    pub ports: String,
    #[serde(default = "default_max_sessions")]
    pub max_sessions: u32,
    #[serde(default = "default_tcp_established_s")]
    pub tcp_established_timeout_s: u32,
    #[serde(default = "default_tcp_transitory_s")]
    pub tcp_transitory_timeout_s: u32,
    #[serde(default = "default_udp_s")]
    pub udp_timeout_s: u32,
    #[serde(default = "default_icmp_s")]
    pub icmp_timeout_s: u32,
    /// Make every shard's session tables for `max_sessions` at start, on
    /// huge pages: no growth work in the worker at all (a growing table
    /// spreads its growth over the inserts around it, ~2 ms of it in the
    /// worst stretch of 1024 creations at a million sessions, and creates
    /// sessions at about half the rate), at the price of the memory up
    /// front and a small population spread thin.
    #[serde(default)]
    pub preallocate: bool,
}

fn default_icmp_rate() -> u32 {
    100
}
fn default_max_neighbors() -> u32 {
    4096
}
fn default_nat_ports() -> String {
    "1024-65535".to_string()
}
fn default_max_sessions() -> u32 {
    262_144
}
fn default_tcp_established_s() -> u32 {
    7440
}
fn default_tcp_transitory_s() -> u32 {
    240
}
fn default_udp_s() -> u32 {
    300
}
fn default_icmp_s() -> u32 {
    60
}

/// Who this node is.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSection {
    /// Unique per node of a cluster.
    #[serde(default = "default_node_id")]
    pub id: u32,
    /// Higher wins when several synchronized backups could take over.
    #[serde(default = "default_priority")]
    pub priority: u8,
    /// Role at start: `standalone` (one node, owns its TX queues), `primary`
    /// or `backup`.
    #[serde(default)]
    pub role: Role,
    /// MAC shared by the cluster's members; gratuitous ARP comes from it.
    #[serde(default)]
    pub virtual_mac: Option<String>,
    /// Virtual IP on the inside segment (announced after a takeover).
    #[serde(default)]
    pub inside_vip: Option<String>,
    /// Virtual IP on the outside segment.
    #[serde(default)]
    pub outside_vip: Option<String>,
}

impl Default for NodeSection {
    fn default() -> Self {
        NodeSection {
            id: default_node_id(),
            priority: default_priority(),
            role: Role::default(),
            virtual_mac: None,
            inside_vip: None,
            outside_vip: None,
        }
    }
}

fn default_node_id() -> u32 {
    1
}

fn default_priority() -> u8 {
    100
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    #[default]
    Standalone,
    Primary,
    Backup,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Standalone => "standalone",
            Role::Primary => "primary",
            Role::Backup => "backup",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "standalone" => Some(Role::Standalone),
            "primary" => Some(Role::Primary),
            "backup" => Some(Role::Backup),
            _ => None,
        }
    }
}

/// DPDK device names of the node's ports (as EAL knows them: the `--vdev`
/// name or a PCI address).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortsSection {
    pub inside: String,
    pub outside: String,
    /// Point-to-point link to the peer(s); required for primary and backup.
    #[serde(default)]
    pub replication: Option<String>,
}

/// Worker and buffer settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataplaneSection {
    /// Worker lcores = queues per port = shards.
    #[serde(default = "default_workers")]
    pub workers: u16,
    /// Packets per RX burst.
    #[serde(default = "default_burst")]
    pub burst: u16,
    /// Mbufs in the packet pool.
    #[serde(default = "default_mbufs")]
    pub mbufs: u32,
    /// Per-lcore mempool cache.
    #[serde(default = "default_mbuf_cache")]
    pub mbuf_cache: u32,
    #[serde(default = "default_desc")]
    pub rx_desc: u16,
    #[serde(default = "default_desc")]
    pub tx_desc: u16,
    /// Sleep this long when a loop iteration finds no packet (0 = busy-poll).
    #[serde(default)]
    pub idle_sleep_us: u64,
    /// Let data ports that can verify IPv4 header checksums on receive do
    /// it, and trust their verdict (off: for a NIC whose offload is not
    /// to be trusted; the function then verifies every header itself).
    #[serde(default = "default_true")]
    pub rx_checksum_offload: bool,
}

impl Default for DataplaneSection {
    fn default() -> Self {
        DataplaneSection {
            workers: default_workers(),
            burst: default_burst(),
            mbufs: default_mbufs(),
            mbuf_cache: default_mbuf_cache(),
            rx_desc: default_desc(),
            tx_desc: default_desc(),
            idle_sleep_us: 0,
            rx_checksum_offload: true,
        }
    }
}

fn default_workers() -> u16 {
    1
}
fn default_true() -> bool {
    true
}
fn default_burst() -> u16 {
    32
}
fn default_mbufs() -> u32 {
    8191
}
fn default_mbuf_cache() -> u32 {
    256
}
fn default_desc() -> u16 {
    1024
}

/// Which network function runs.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct FunctionSection {
    #[serde(default)]
    pub kind: FunctionKind,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FunctionKind {
    #[default]
    Forward,
    Router,
    Nat,
}

impl FunctionKind {
    pub fn name(self) -> &'static str {
        match self {
            FunctionKind::Forward => "forward",
            FunctionKind::Router => "router",
            FunctionKind::Nat => "nat",
        }
    }
}

/// The management link: heartbeats and the checkpoint protocol (used once
/// replication is on).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManagementSection {
    /// This node's management address, `ip:port`.
    #[serde(default)]
    pub address: Option<String>,
    /// Peers' management addresses.
    #[serde(default)]
    pub peers: Vec<String>,
    #[serde(default = "default_heartbeat_ms")]
    pub heartbeat_ms: u32,
    #[serde(default = "default_dead_intervals")]
    pub dead_intervals: u32,
    /// Pre-shared key of the cluster, hex (>= 16 bytes): heartbeats are
    /// authenticated with HMAC-SHA256 under it.
    #[serde(default)]
    pub key: Option<String>,
    /// A primary whose worker made no progress for this long (and at least
    /// the dead interval) steps down. Longer than the dead interval so that
    /// a descheduled worker on a busy machine is not mistaken for a hung one.
    #[serde(default = "default_watchdog_ms")]
    pub watchdog_ms: u32,
    /// `SCHED_FIFO` priority of the control thread (failure detector,
    /// heartbeats); 0 keeps it at normal priority. At normal priority beside
    /// busy-polling workers it can wake several milliseconds late, which
    /// delays detection by as much.
    #[serde(default = "default_realtime_priority")]
    pub realtime_priority: u8,
}

impl Default for ManagementSection {
    fn default() -> Self {
        ManagementSection {
            address: None,
            peers: Vec::new(),
            heartbeat_ms: default_heartbeat_ms(),
            dead_intervals: default_dead_intervals(),
            key: None,
            watchdog_ms: default_watchdog_ms(),
            realtime_priority: default_realtime_priority(),
        }
    }
}

/// The replication stream and what a backup keeps to take over.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplicationSection {
    /// Backup egress kept per shard until the primary's `tx_done` frees it.
    #[serde(default = "default_shadow_ring")]
    pub shadow_ring: u32,
    /// Copies of its own ingress a backup keeps per data port and shard
    /// until their replicas arrive, to process after a takeover what the
    /// primary never replicated. Must cover the primary's RX ring depth (a
    /// primary falling behind in a burst holds that much unreplicated) plus
    /// the traffic of one dead interval.
    #[serde(default = "default_ingress_window")]
    pub ingress_window: u32,
    /// KEEPALIVE on an idle shard after this long (default: heartbeat_ms).
    #[serde(default)]
    pub keepalive_us: Option<u32>,
    /// Extra packets per shard to resend at takeover, for what sat in a dead
    /// server's NIC TX ring (more duplicates, no loss).
    #[serde(default)]
    pub takeover_replay: u32,
    /// In-band sync audit: every this many ms each primary shard sends the
    /// digest of one slice (of 64) of its state; a backup whose own digest
    /// differs at the same sequence point stops counting as synchronized.
    /// 0 = off.
    #[serde(default = "default_audit_ms")]
    pub audit_ms: u32,
    /// Destination of replication frames (a group address reaches every
    /// backup on the replication segment).
    #[serde(default = "default_group_mac")]
    pub group_mac: String,
    /// Mbufs in the pool of replication headers.
    #[serde(default = "default_header_mbufs")]
    pub header_mbufs: u32,
    /// Small packets' records are batched into replication frames of up to
    /// this many bytes (Ethernet header included; the replication link must
    /// carry them). 0: one frame per packet.
    #[serde(default = "default_batch_bytes")]
    pub batch_bytes: u32,
    /// Flow control: a primary shard runs at most this many records ahead
    /// of its slowest synchronized backup, whose ACKs come every quarter of
    /// it; what it cannot take waits (or is dropped, counted) in its NIC's RX
    /// ring instead of being lost on the replication link. Set on both
    /// nodes. Default: half of `dataplane.rx_desc`, so a backup's
    /// replication RX ring holds a window even at one record per frame,
    /// with room for ACKs on their way (and a shorter queue between the
    /// two is faster: `benches/src/bin/pair.rs`). 0: off (no ACKs).
    #[serde(default)]
    pub flow_window: Option<u32>,
    /// How long a backup's last ACK holds the primary: one silent longer
    /// (dead, descheduled) is no longer waited for.
    #[serde(default = "default_flow_hold_us")]
    pub flow_hold_us: u32,
    /// How long a checkpoint's close may hold the data ports when its
    /// rounds do not converge (the traffic touches the sessions in use
    /// faster than a round takes): the price, once, of bringing a backup
    /// into sync under that load. 0: never more than a close that goes at
    /// once (such a checkpoint is then abandoned and retried).
    #[serde(default = "default_checkpoint_hold_ms")]
    pub checkpoint_hold_ms: u32,
}

impl Default for ReplicationSection {
    fn default() -> Self {
        ReplicationSection {
            shadow_ring: default_shadow_ring(),
            ingress_window: default_ingress_window(),
            keepalive_us: None,
            takeover_replay: 0,
            audit_ms: default_audit_ms(),
            group_mac: default_group_mac(),
            header_mbufs: default_header_mbufs(),
            batch_bytes: default_batch_bytes(),
            flow_window: None,
            flow_hold_us: default_flow_hold_us(),
            checkpoint_hold_ms: default_checkpoint_hold_ms(),
        }
    }
}

fn default_shadow_ring() -> u32 {
    2048
}
fn default_ingress_window() -> u32 {
    8192
}
fn default_audit_ms() -> u32 {
    1000
}
fn default_checkpoint_hold_ms() -> u32 {
    (dataplane::worker::CHECKPOINT_HOLD_NS / 1_000_000) as u32
}

fn default_group_mac() -> String {
    "03:4c:53:00:00:01".to_string()
}
fn default_batch_bytes() -> u32 {
    1514
}
fn default_flow_hold_us() -> u32 {
    1000
}
fn default_header_mbufs() -> u32 {
    8191
}

fn default_heartbeat_ms() -> u32 {
    10
}
fn default_realtime_priority() -> u8 {
    10
}
fn default_watchdog_ms() -> u32 {
    200
}
fn default_dead_intervals() -> u32 {
    3
}

/// A configuration problem, naming the field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub field: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.field, self.message)
        }
    }
}

fn err(field: &str, message: impl Into<String>) -> ConfigError {
    ConfigError {
        field: field.to_string(),
        message: message.into(),
    }
}

impl Config {
    /// Reads, parses and validates a file.
    pub fn load(path: &Path) -> Result<Config, Vec<ConfigError>> {
        let text =
            std::fs::read_to_string(path).map_err(|e| vec![err("", format!("cannot read {}: {e}", path.display()))])?;
        Config::parse(&text)
    }

    /// Parses and validates TOML text.
    pub fn parse(text: &str) -> Result<Config, Vec<ConfigError>> {
        let cfg: Config = toml::from_str(text).map_err(|e| vec![toml_error(text, &e)])?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks every value; returns all problems at once.
    pub fn validate(&self) -> Result<(), Vec<ConfigError>> {
        let mut errs = Vec::new();
        let d = &self.dataplane;
        if d.workers == 0 || d.workers > 64 {
            errs.push(err("dataplane.workers", format!("must be 1..=64 (got {})", d.workers)));
        }
        if d.burst == 0 || d.burst as usize > MAX_BURST {
            errs.push(err(
                "dataplane.burst",
                format!("must be 1..={MAX_BURST} (got {})", d.burst),
            ));
        }
        let min_mbufs = (d.workers as u32) * 3 * (d.rx_desc as u32 + d.burst as u32);
        if d.mbufs < 1024 || d.mbufs < min_mbufs {
            errs.push(err(
                "dataplane.mbufs",
                format!(
                    "must be at least {} for {} worker(s) with rx_desc {} (got {})",
                    min_mbufs.max(1024),
                    d.workers,
                    d.rx_desc,
                    d.mbufs
                ),
            ));
        }
        if d.mbuf_cache > 512 || d.mbuf_cache > d.mbufs / 2 {
            errs.push(err(
                "dataplane.mbuf_cache",
                format!("must be <= 512 and <= mbufs/2 (got {})", d.mbuf_cache),
            ));
        }
        for (name, v) in [("dataplane.rx_desc", d.rx_desc), ("dataplane.tx_desc", d.tx_desc)] {
            if !(64..=16384).contains(&v) || !v.is_power_of_two() {
                errs.push(err(name, format!("must be a power of two in 64..=16384 (got {v})")));
            }
        }
        if d.idle_sleep_us > 1_000_000 {
            errs.push(err(
                "dataplane.idle_sleep_us",
                format!("must be <= 1000000 (got {})", d.idle_sleep_us),
            ));
        }
        let p = &self.ports;
        for (name, v) in [("ports.inside", &p.inside), ("ports.outside", &p.outside)] {
            if v.trim().is_empty() {
                errs.push(err(name, "must name a DPDK device"));
            }
        }
        if p.inside == p.outside && !p.inside.is_empty() {
            errs.push(err(
                "ports.outside",
                format!("must differ from ports.inside (both '{}')", p.inside),
            ));
        }
        if let Some(r) = &p.replication {
            if r.trim().is_empty() {
                errs.push(err("ports.replication", "must name a DPDK device"));
            } else if r == &p.inside || r == &p.outside {
                errs.push(err(
                    "ports.replication",
                    format!("must differ from the data ports (got '{r}')"),
                ));
            }
        }
        if self.node.id == 0 {
            errs.push(err("node.id", "must be >= 1"));
        }
        let m = &self.management;
        if m.heartbeat_ms == 0 || m.heartbeat_ms > 10_000 {
            errs.push(err(
                "management.heartbeat_ms",
                format!("must be 1..=10000 (got {})", m.heartbeat_ms),
            ));
        }
        if m.dead_intervals < 2 || m.dead_intervals > 100 {
            errs.push(err(
                "management.dead_intervals",
                format!("must be 2..=100 (got {})", m.dead_intervals),
            ));
        }
        if m.watchdog_ms == 0 || m.watchdog_ms > 60_000 {
            errs.push(err(
                "management.watchdog_ms",
                format!("must be 1..=60000 (got {})", m.watchdog_ms),
            ));
        }
        if m.realtime_priority > 99 {
            errs.push(err(
                "management.realtime_priority",
                format!("must be 0 (off) or 1..=99 (got {})", m.realtime_priority),
            ));
        }
        if let Some(a) = &m.address {
            if a.parse::<std::net::SocketAddr>().is_err() {
                errs.push(err("management.address", format!("must be ip:port (got '{a}')")));
            }
        }
        for (i, peer) in m.peers.iter().enumerate() {
            if peer.parse::<std::net::SocketAddr>().is_err() {
                errs.push(err(
                    &format!("management.peers[{i}]"),
                    format!("must be ip:port (got '{peer}')"),
                ));
            }
        }
        self.validate_replication(&mut errs);
        self.validate_function(&mut errs);
        if errs.is_empty() {
            Ok(())
        } else {
            Err(errs)
        }
    }
}

/// `a.b.c.d/len` with a host address kept (interface addresses).
pub fn parse_cidr(s: &str) -> Option<(std::net::Ipv4Addr, u8)> {
    let (a, l) = s.split_once('/')?;
    let a: std::net::Ipv4Addr = a.trim().parse().ok()?;
    let l: u8 = l.trim().parse().ok()?;
    (1..=32).contains(&l).then_some((a, l))
}

/// `lo-hi`
pub fn parse_port_range(s: &str) -> Option<(u16, u16)> {
    let (lo, hi) = s.split_once('-')?;
    let (lo, hi): (u16, u16) = (lo.trim().parse().ok()?, hi.trim().parse().ok()?);
    (lo >= 1 && lo <= hi).then_some((lo, hi))
}

impl Config {
    fn validate_function(&self, errs: &mut Vec<ConfigError>) {
        let kind = self.function.kind;
        if kind == FunctionKind::Forward {
            return;
        }
        if self.node.virtual_mac.is_none() {
            errs.push(err(
                "node.virtual_mac",
                format!("is required by function.kind = \"{}\"", kind.name()),
            ));
        }
        let Some(r) = &self.router else {
            errs.push(err(
                "router",
                format!("section [router] is required by function.kind = \"{}\"", kind.name()),
            ));
            return;
        };
        for (name, v) in [("router.inside", &r.inside), ("router.outside", &r.outside)] {
            if parse_cidr(v).is_none() {
                errs.push(err(
                    name,
                    format!("must be an address with its prefix length, a.b.c.d/len (got '{v}')"),
                ));
            }
        }
        for (i, route) in r.routes.iter().enumerate() {
            if dataplane::nf::route::Route::parse_prefix(&route.prefix).is_none() {
                errs.push(err(
                    &format!("router.routes[{i}].prefix"),
                    format!("must be a.b.c.d/len (got '{}')", route.prefix),
                ));
            }
            if let Some(v) = &route.via {
                if v.parse::<std::net::Ipv4Addr>().is_err() {
                    errs.push(err(
                        &format!("router.routes[{i}].via"),
                        format!("must be an IPv4 address (got '{v}')"),
                    ));
                }
            }
            if !matches!(route.port.as_str(), "inside" | "outside") {
                errs.push(err(
                    &format!("router.routes[{i}].port"),
                    format!("must be inside or outside (got '{}')", route.port),
                ));
            }
        }
        for (i, n) in r.neighbors.iter().enumerate() {
            if n.ip.parse::<std::net::Ipv4Addr>().is_err() {
                errs.push(err(
                    &format!("router.neighbors[{i}].ip"),
                    format!("must be an IPv4 address (got '{}')", n.ip),
                ));
            }
            if dataplane::wire::MacAddr::parse(&n.mac).is_none() {
                errs.push(err(
                    &format!("router.neighbors[{i}].mac"),
                    format!("must be a MAC address (got '{}')", n.mac),
                ));
            }
            if !matches!(n.port.as_str(), "inside" | "outside") {
                errs.push(err(
                    &format!("router.neighbors[{i}].port"),
                    format!("must be inside or outside (got '{}')", n.port),
                ));
            }
        }
        if r.icmp_rate == 0 || r.icmp_rate > 1_000_000 {
            errs.push(err(
                "router.icmp_rate",
                format!("must be 1..=1000000 (got {})", r.icmp_rate),
            ));
        }
        if r.arp_rate == 0 || r.arp_rate > 1_000_000 {
            errs.push(err(
                "router.arp_rate",
                format!("must be 1..=1000000 (got {})", r.arp_rate),
            ));
        }
        if r.max_neighbors == 0 {
            errs.push(err("router.max_neighbors", "must be >= 1"));
        }
        if kind == FunctionKind::Nat {
            let default = NatSection {
                address: None,
                ports: default_nat_ports(),
                max_sessions: default_max_sessions(),
                tcp_established_timeout_s: default_tcp_established_s(),
                tcp_transitory_timeout_s: default_tcp_transitory_s(),
                udp_timeout_s: default_udp_s(),
                icmp_timeout_s: default_icmp_s(),
                preallocate: false,
            };
            let n = self.nat.as_ref().unwrap_or(&default);
            if let Some(a) = &n.address {
                if a.parse::<std::net::Ipv4Addr>().is_err() {
                    errs.push(err("nat.address", format!("must be an IPv4 address (got '{a}')")));
                }
            }
            match parse_port_range(&n.ports) {
                None => errs.push(err(
                    "nat.ports",
                    format!("must be lo-hi with 1 <= lo <= hi <= 65535 (got '{}')", n.ports),
                )),
                // Each shard allocates from its own block of the range.
                Some((lo, hi)) if ((hi - lo) as u32 + 1) < self.dataplane.workers as u32 => errs.push(err(
                    "nat.ports",
                    format!(
                        "'{}' holds fewer ports than dataplane.workers = {} (each worker allocates from its own block)",
                        n.ports, self.dataplane.workers
                    ),
                )),
                Some(_) => {}
            }
            if n.max_sessions == 0 || n.max_sessions > 16_000_000 {
                errs.push(err(
                    "nat.max_sessions",
                    format!("must be 1..=16000000 (got {})", n.max_sessions),
                ));
            }
            for (name, v) in [
                ("nat.tcp_established_timeout_s", n.tcp_established_timeout_s),
                ("nat.tcp_transitory_timeout_s", n.tcp_transitory_timeout_s),
                ("nat.udp_timeout_s", n.udp_timeout_s),
                ("nat.icmp_timeout_s", n.icmp_timeout_s),
            ] {
                if v == 0 {
                    errs.push(err(name, "must be >= 1"));
                }
            }
        } else if self.nat.is_some() {
            errs.push(err("nat", "section [nat] needs function.kind = \"nat\""));
        }
    }

    /// Whether this node replicates (primary or backup).
    pub fn replicating(&self) -> bool {
        matches!(self.node.role, Role::Primary | Role::Backup)
    }

    /// Mbufs the data path may hold at once: RX rings and bursts, plus, when
    /// replicating, the shadow rings and ingress windows.
    pub fn mbufs_needed(&self) -> u32 {
        let d = &self.dataplane;
        let base = (d.workers as u32) * 3 * (d.rx_desc as u32 + d.burst as u32);
        if !self.replicating() {
            return base;
        }
        let r = &self.replication;
        base + (d.workers as u32) * (r.shadow_ring + 2 * r.ingress_window + d.rx_desc as u32)
    }

    fn validate_replication(&self, errs: &mut Vec<ConfigError>) {
        let n = &self.node;
        if let Some(m) = &n.virtual_mac {
            if dataplane::wire::MacAddr::parse(m).is_none() {
                errs.push(err(
                    "node.virtual_mac",
                    format!("must be a MAC address aa:bb:cc:dd:ee:ff (got '{m}')"),
                ));
            }
        }
        for (name, v) in [("node.inside_vip", &n.inside_vip), ("node.outside_vip", &n.outside_vip)] {
            if let Some(ip) = v {
                if ip.parse::<std::net::Ipv4Addr>().is_err() {
                    errs.push(err(name, format!("must be an IPv4 address (got '{ip}')")));
                }
            }
        }
        let r = &self.replication;
        if dataplane::wire::MacAddr::parse(&r.group_mac).is_none() {
            errs.push(err(
                "replication.group_mac",
                format!("must be a MAC address (got '{}')", r.group_mac),
            ));
        }
        if !(16..=1 << 20).contains(&r.shadow_ring) {
            errs.push(err(
                "replication.shadow_ring",
                format!("must be 16..=1048576 (got {})", r.shadow_ring),
            ));
        }
        if !(16..=1 << 20).contains(&r.ingress_window) {
            errs.push(err(
                "replication.ingress_window",
                format!("must be 16..=1048576 (got {})", r.ingress_window),
            ));
        }
        if r.keepalive_us == Some(0) {
            errs.push(err("replication.keepalive_us", "must be >= 1"));
        }
        if r.checkpoint_hold_ms > 1000 {
            errs.push(err(
                "replication.checkpoint_hold_ms",
                format!("must be 0 ..= 1000 (got {})", r.checkpoint_hold_ms),
            ));
        }
        if r.audit_ms > 3_600_000 {
            errs.push(err(
                "replication.audit_ms",
                format!("must be 0 (off) ..= 3600000 (got {})", r.audit_ms),
            ));
        }
        if r.batch_bytes != 0 && !(128..=9014).contains(&r.batch_bytes) {
            errs.push(err(
                "replication.batch_bytes",
                format!("must be 0 or 128..=9014 (got {})", r.batch_bytes),
            ));
        }
        if let Some(w) = r.flow_window.filter(|w| *w != 0 && !(16..=1 << 20).contains(w)) {
            errs.push(err(
                "replication.flow_window",
                format!("must be 0 (off) or 16..=1048576 (got {w})"),
            ));
        }
        if !(1..=1_000_000).contains(&r.flow_hold_us) {
            errs.push(err(
                "replication.flow_hold_us",
                format!("must be 1..=1000000 (got {})", r.flow_hold_us),
            ));
        }
        if r.header_mbufs < 1023 {
            errs.push(err(
                "replication.header_mbufs",
                format!("must be >= 1023 (got {})", r.header_mbufs),
            ));
        }
        if !self.replicating() {
            return;
        }
        if self.ports.replication.is_none() {
            errs.push(err(
                "ports.replication",
                format!("is required when node.role = \"{}\"", n.role.name()),
            ));
        }
        let m = &self.management;
        if m.address.is_none() {
            errs.push(err(
                "management.address",
                format!("is required when node.role = \"{}\"", n.role.name()),
            ));
        }
        if m.peers.is_empty() {
            errs.push(err(
                "management.peers",
                format!("needs at least one peer when node.role = \"{}\"", n.role.name()),
            ));
        }
        match &m.key {
            None => errs.push(err(
                "management.key",
                "is required when replicating: a hex pre-shared key of >= 16 bytes",
            )),
            Some(k) if control::heartbeat::parse_key(k).is_none() => {
                errs.push(err("management.key", "must be hex, at least 32 digits (16 bytes)"))
            }
            _ => {}
        }
        let base = (self.dataplane.workers as u32) * 3 * (self.dataplane.rx_desc as u32 + self.dataplane.burst as u32);
        if self.dataplane.mbufs >= base.max(1024) && self.dataplane.mbufs < self.mbufs_needed() {
            errs.push(err(
                "dataplane.mbufs",
                format!(
                    "must be at least {} with {} worker(s), shadow_ring {} and ingress_window {} (got {})",
                    self.mbufs_needed(),
                    self.dataplane.workers,
                    r.shadow_ring,
                    r.ingress_window,
                    self.dataplane.mbufs
                ),
            ));
        }
    }
}

/// Turns a TOML/serde error into one that names the field. serde names
/// unknown and missing fields itself; for a bad value, toml gives the span of
/// the value, from which we recover `section.key`.
fn toml_error(text: &str, e: &toml::de::Error) -> ConfigError {
    let field = e.span().map(|span| field_at(text, span.start)).unwrap_or_default();
    let message = match e.span().map(|s| line_col(text, s.start)) {
        Some((line, col)) => format!("{} (line {line}, column {col})", e.message()),
        None => e.message().to_string(),
    };
    ConfigError { field, message }
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.len() - before.rfind('\n').map(|i| i + 1).unwrap_or(0) + 1;
    (line, col)
}

/// `section.key` of the `key = value` line holding byte `offset`.
fn field_at(text: &str, offset: usize) -> String {
    let mut section = String::new();
    let mut pos = 0;
    for line in text.split_inclusive('\n') {
        let end = pos + line.len();
        let t = line.trim();
        if t.starts_with('[') {
            section = t.trim_matches(|c| c == '[' || c == ']').trim().to_string();
        }
        if offset < end {
            let key = match t.split_once('=') {
                Some((k, _)) if !t.starts_with('[') => k.trim().trim_matches('"'),
                _ => return section,
            };
            return if section.is_empty() {
                key.to_string()
            } else {
                format!("{section}.{key}")
            };
        }
        pos = end;
    }
    section
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = "[ports]\ninside = \"net_null0\"\noutside = \"net_null1\"\n";

    #[test]
    fn minimal_config_takes_the_defaults() {
        let c = Config::parse(MINIMAL).unwrap();
        assert_eq!(c.dataplane.workers, 1);
        assert_eq!(c.dataplane.burst, 32);
        assert_eq!(c.function.kind, FunctionKind::Forward);
        assert_eq!(c.node.role, Role::Standalone);
        assert_eq!(c.management.heartbeat_ms, 10);
        assert!(
            c.dataplane.rx_checksum_offload,
            "the NIC's checksum offload is used where it exists"
        );
    }

    #[test]
    fn nat_tables_grow_unless_preallocation_is_asked_for() {
        let nat = format!(
            "[node]\nvirtual_mac = \"02:00:5e:00:01:01\"\n{MINIMAL}[function]\nkind = \"nat\"\n[router]\ninside = \"10.10.1.1/24\"\noutside = \"10.10.2.1/24\"\n[nat]\n"
        );
        let preallocate = |extra: &str| {
            Config::parse(&format!("{nat}{extra}"))
                .unwrap()
                .nat
                .map(|n| n.preallocate)
        };
        assert_eq!(preallocate(""), Some(false));
        assert_eq!(preallocate("preallocate = true\n"), Some(true));
    }

    #[test]
    fn rx_checksum_offload_can_be_turned_off() {
        let c = Config::parse(&format!("{MINIMAL}[dataplane]\nrx_checksum_offload = false\n")).unwrap();
        assert!(!c.dataplane.rx_checksum_offload);
    }

    fn field_of(text: &str) -> Vec<String> {
        Config::parse(text).unwrap_err().into_iter().map(|e| e.field).collect()
    }

    #[test]
    fn zero_burst_names_dataplane_burst() {
        assert_eq!(
            field_of(&format!("{MINIMAL}[dataplane]\nburst = 0\n")),
            ["dataplane.burst"]
        );
    }

    #[test]
    fn same_inside_and_outside_names_ports_outside() {
        assert_eq!(
            field_of("[ports]\ninside = \"a\"\noutside = \"a\"\n"),
            ["ports.outside"]
        );
    }

    #[test]
    fn bad_peer_address_names_its_index() {
        assert_eq!(
            field_of(&format!(
                "{MINIMAL}[management]\npeers = [\"10.0.0.1:7000\", \"nope\"]\n"
            )),
            ["management.peers[1]"]
        );
    }

    #[test]
    fn wrong_type_names_section_and_key() {
        assert_eq!(
            field_of(&format!("{MINIMAL}[dataplane]\nworkers = 1\nburst = \"many\"\n")),
            ["dataplane.burst"]
        );
    }

    #[test]
    fn unknown_function_kind_names_function_kind() {
        assert_eq!(
            field_of(&format!("{MINIMAL}[function]\nkind = \"teleport\"\n")),
            ["function.kind"]
        );
    }

    #[test]
    fn flow_control_settings_out_of_range_name_their_fields() {
        assert_eq!(
            field_of(&format!("{MINIMAL}[replication]\nflow_window = 8\nflow_hold_us = 0\n")),
            ["replication.flow_window", "replication.flow_hold_us"]
        );
        let off = Config::parse(&format!("{MINIMAL}[replication]\nflow_window = 0\n")).unwrap();
        assert_eq!(off.replication.flow_window, Some(0));
        assert_eq!(Config::parse(MINIMAL).unwrap().replication.flow_hold_us, 1000);
    }

    #[test]
    fn a_checkpoint_hold_defaults_to_50_ms_and_over_a_second_names_its_field() {
        assert_eq!(Config::parse(MINIMAL).unwrap().replication.checkpoint_hold_ms, 50);
        let off = Config::parse(&format!("{MINIMAL}[replication]\ncheckpoint_hold_ms = 0\n")).unwrap();
        assert_eq!(off.replication.checkpoint_hold_ms, 0);
        assert_eq!(
            field_of(&format!("{MINIMAL}[replication]\ncheckpoint_hold_ms = 1001\n")),
            ["replication.checkpoint_hold_ms"]
        );
    }

    #[test]
    fn unknown_key_is_reported_by_name() {
        let e = Config::parse(&format!("{MINIMAL}[dataplane]\nbursts = 4\n")).unwrap_err();
        assert!(e[0].to_string().contains("bursts"), "{}", e[0]);
    }

    #[test]
    fn missing_ports_section_is_reported_by_name() {
        let e = Config::parse("[dataplane]\nburst = 4\n").unwrap_err();
        assert!(e[0].to_string().contains("ports"), "{}", e[0]);
    }
}
