//! Longest-prefix match: DPDK's `rte_lpm` against the Rust table the unit
//! tests use, on the same routes and addresses.
//!
//!   lpm [ROUTES] [LOOKUPS] > lpm.json

use std::net::Ipv4Addr;
use std::time::Instant;

use benches::Lcg;
use dataplane::dpdk::lpm::DpdkLpm;
use dataplane::nf::route::{mask, Route, RouteLookup, RustLpm};
use dataplane::nf::Side;

fn time(lookup: impl Fn(u32) -> Option<u32>, addrs: &[u32]) -> (f64, u64) {
    let start = Instant::now();
    let mut hits = 0u64;
    for a in addrs {
        if let Some(i) = lookup(*a) {
            hits = hits.wrapping_add(i as u64 + 1);
        }
    }
    (start.elapsed().as_secs_f64() * 1e9 / addrs.len() as f64, hits)
}

fn main() {
    let n_routes: usize = benches::arg(1, 10_000);
    let n_lookups: usize = benches::arg(2, 10_000_000);
    let _eal = benches::table_eal("lpm");
    let mut lcg = Lcg(7);
    let mut routes = vec![Route {
        prefix: Ipv4Addr::UNSPECIFIED,
        len: 0,
        side: Side::Outside,
        via: Some(Ipv4Addr::new(10, 10, 2, 254)),
    }];
    while routes.len() < n_routes {
        let len = 8 + (lcg.next_u64() % 21) as u8; // /8 .. /28
        let p = (lcg.next_u64() as u32) & mask(len);
        routes.push(Route {
            prefix: Ipv4Addr::from(p),
            len,
            side: Side::Outside,
            via: None,
        });
    }
    // Half the lookups hit a configured prefix, half random addresses.
    let addrs: Vec<u32> = (0..n_lookups)
        .map(|i| {
            if i % 2 == 0 {
                let r = &routes[(lcg.next_u64() as usize) % routes.len()];
                u32::from(r.prefix) | (lcg.next_u64() as u32 & !mask(r.len))
            } else {
                lcg.next_u64() as u32
            }
        })
        .collect();
    let dpdk = DpdkLpm::new("bench_lpm", &routes).expect("rte_lpm");
    let rust = RustLpm::new(&routes);
    // Both must agree on every answer's prefix length (rte_lpm keeps the
    // first route of a duplicated prefix, as RustLpm does).
    for a in addrs.iter().take(100_000) {
        let (x, y) = (dpdk.lookup(*a), rust.lookup(*a));
        let len = |i: Option<u32>| i.map(|i| routes[i as usize].len);
        assert_eq!(len(x), len(y), "{}", Ipv4Addr::from(*a));
    }
    // rte_lpm's tables read inline (what the router does), the same through
    // DPDK's rte_lpm_lookup (a call per lookup), and the Rust table.
    let (ns_dpdk, h1) = time(|a| dpdk.lookup(a), &addrs);
    let (ns_call, h2) = time(|a| dpdk.lookup_via_call(a), &addrs);
    let (ns_rust, h3) = time(|a| rust.lookup(a), &addrs);
    println!(
        "{{\"routes\": {}, \"lookups\": {}, \"rte_lpm_ns\": {:.2}, \"rte_lpm_call_ns\": {:.2}, \"rust_table_ns\": {:.2}, \"checksum\": {}}}",
        routes.len(),
        n_lookups,
        ns_dpdk,
        ns_call,
        ns_rust,
        h1 ^ h2 ^ h3
    );
}
