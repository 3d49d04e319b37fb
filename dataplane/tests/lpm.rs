//! The router's inlined read of DPDK's `rte_lpm` tables gives the same
//! answer as DPDK's own `rte_lpm_lookup`, on real DPDK.

mod common;

use std::net::Ipv4Addr;

use dataplane::dpdk::lpm::DpdkLpm;
use dataplane::fuzzing::Corpus;
use dataplane::nf::route::{mask, Route, RouteLookup};
use dataplane::nf::Side;

fn routes(rng: &mut Corpus) -> Vec<Route> {
    let mut v = vec![Route {
        prefix: Ipv4Addr::UNSPECIFIED,
        len: 0,
        side: Side::Outside,
        via: Some(Ipv4Addr::new(10, 10, 2, 254)),
    }];
    // /8 to /32: prefixes longer than /24 live in tbl8 groups.
    for i in 0..2000u32 {
        let len = 8 + (i % 25) as u8;
        v.push(Route {
            prefix: Ipv4Addr::from(rng.next_u64() as u32 & mask(len)),
            len,
            side: if i % 2 == 0 { Side::Inside } else { Side::Outside },
            via: None,
        });
    }
    v
}

#[test]
fn the_inlined_lookup_answers_exactly_as_rte_lpm_lookup() {
    common::eal();
    let mut rng = Corpus::new(7);
    let routes = routes(&mut rng);
    let lpm = DpdkLpm::new("test_lpm_inline", &routes).expect("rte_lpm");
    let (mut tbl8_hits, mut defaults) = (0, 0);
    for i in 0..400_000u32 {
        // Half inside a configured prefix, half anywhere.
        let a = if i % 2 == 0 {
            let r = &routes[1 + (rng.next_u64() as usize) % (routes.len() - 1)];
            u32::from(r.prefix) | (rng.next_u64() as u32 & !mask(r.len))
        } else {
            rng.next_u64() as u32
        };
        let (inline, call) = (lpm.lookup(a), lpm.lookup_via_call(a));
        assert_eq!(inline, call, "{}", Ipv4Addr::from(a));
        match inline.map(|i| routes[i as usize].len) {
            Some(l) if l > 24 => tbl8_hits += 1,
            Some(0) => defaults += 1,
            _ => {}
        }
    }
    assert!(tbl8_hits > 10_000, "prefixes longer than /24 exercised ({tbl8_hits})");
    assert!(defaults > 10_000, "the default route exercised ({defaults})");
}
