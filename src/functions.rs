//! Builds the network functions' static configuration from the node's
//! (validated) configuration.

use std::net::Ipv4Addr;

use dataplane::nf::nat::{NatConfig, Timeouts};
use dataplane::nf::route::Route;
use dataplane::nf::{RouterConfig, Side};
use dataplane::wire::MacAddr;

use crate::config::{parse_cidr, parse_port_range, Config, FunctionKind};

/// The router (with its NAT for `nat`) of a validated configuration.
pub fn router_config(cfg: &Config) -> Result<RouterConfig, String> {
    let r = cfg.router.as_ref().ok_or("[router] missing")?;
    let vmac = cfg
        .node
        .virtual_mac
        .as_deref()
        .and_then(MacAddr::parse)
        .ok_or("node.virtual_mac missing")?;
    let (ia, il) = parse_cidr(&r.inside).ok_or("router.inside")?;
    let (oa, ol) = parse_cidr(&r.outside).ok_or("router.outside")?;
    let mut configured = Vec::new();
    for (i, e) in r.routes.iter().enumerate() {
        let (prefix, len) = Route::parse_prefix(&e.prefix).ok_or(format!("router.routes[{i}].prefix"))?;
        configured.push(Route {
            prefix,
            len,
            side: if e.port == "inside" {
                Side::Inside
            } else {
                Side::Outside
            },
            via: e.via.as_deref().and_then(|v| v.parse().ok()),
        });
    }
    let nat = match cfg.function.kind {
        FunctionKind::Nat => {
            let n = cfg.nat.as_ref();
            let address = n
                .and_then(|n| n.address.as_deref())
                .and_then(|a| a.parse::<Ipv4Addr>().ok())
                .unwrap_or(oa);
            let (lo, hi) = parse_port_range(n.map(|n| n.ports.as_str()).unwrap_or("1024-65535")).ok_or("nat.ports")?;
            let s = |v: u32| v as u64 * 1_000_000_000;
            let d = Timeouts::default();
            Some(NatConfig {
                address: u32::from(address),
                port_lo: lo,
                port_hi: hi,
                max_sessions: n.map(|n| n.max_sessions as usize).unwrap_or(262_144),
                timeouts: Timeouts {
                    tcp_established: n.map(|n| s(n.tcp_established_timeout_s)).unwrap_or(d.tcp_established),
                    tcp_transitory: n.map(|n| s(n.tcp_transitory_timeout_s)).unwrap_or(d.tcp_transitory),
                    tcp_reset: d.tcp_reset,
                    udp: n.map(|n| s(n.udp_timeout_s)).unwrap_or(d.udp),
                    icmp: n.map(|n| s(n.icmp_timeout_s)).unwrap_or(d.icmp),
                },
            })
        }
        _ => None,
    };
    let static_neighbors = r
        .neighbors
        .iter()
        .filter_map(|n| {
            Some((
                n.ip.parse::<Ipv4Addr>().ok()?,
                MacAddr::parse(&n.mac)?,
                if n.port == "inside" {
                    Side::Inside
                } else {
                    Side::Outside
                },
            ))
        })
        .collect();
    Ok(RouterConfig {
        static_neighbors,
        vmac,
        addr: [ia, oa],
        prefix_len: [il, ol],
        routes: RouterConfig::all_routes([ia, oa], [il, ol], &configured),
        icmp_rate: r.icmp_rate,
        arp_rate: r.arp_rate,
        max_neighbors: r.max_neighbors as usize,
        nat,
    })
}
