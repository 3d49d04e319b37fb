//! IPv4 routes and their longest-prefix-match lookup.
//!
//! The router asks a [`RouteLookup`] for the index of the route that covers
//! a destination. Production uses DPDK's `rte_lpm` ([`crate::dpdk::lpm`],
//! DIR-24-8: one or two memory reads per lookup); tests, fuzzing and the
//! benchmark's comparison use [`RustLpm`], a plain table per prefix length.

use std::collections::HashMap;
use std::net::Ipv4Addr;

use super::Side;

/// One route: `prefix/len` reached through `side`, via `via` (None: the
/// destination is on the link).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Route {
    pub prefix: Ipv4Addr,
    pub len: u8,
    pub side: Side,
    pub via: Option<Ipv4Addr>,
}

impl Route {
    /// Parses `a.b.c.d/len`.
    pub fn parse_prefix(s: &str) -> Option<(Ipv4Addr, u8)> {
        let (a, l) = s.split_once('/')?;
        let a: Ipv4Addr = a.trim().parse().ok()?;
        let l: u8 = l.trim().parse().ok()?;
        (l <= 32).then_some((Ipv4Addr::from(u32::from(a) & mask(l)), l))
    }
}

/// The netmask of a prefix length.
#[inline]
pub fn mask(len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        u32::MAX << (32 - len.min(32) as u32)
    }
}

/// Longest-prefix match: the index (into the route list it was built from)
/// of the most specific route covering `dst`.
pub trait RouteLookup: Send + Sync + 'static {
    fn lookup(&self, dst: u32) -> Option<u32>;
}

/// One hash table per prefix length in use, searched from the longest.
pub struct RustLpm {
    /// (len, mask, prefix -> route index), longest first.
    tables: Vec<(u8, u32, HashMap<u32, u32>)>,
}

impl RustLpm {
    pub fn new(routes: &[Route]) -> RustLpm {
        let mut by_len: Vec<(u8, u32, HashMap<u32, u32>)> = Vec::new();
        for (i, r) in routes.iter().enumerate() {
            let m = mask(r.len);
            let key = u32::from(r.prefix) & m;
            match by_len.iter_mut().find(|t| t.0 == r.len) {
                Some(t) => {
                    t.2.entry(key).or_insert(i as u32);
                }
                None => by_len.push((r.len, m, HashMap::from([(key, i as u32)]))),
            }
        }
        by_len.sort_by_key(|t| std::cmp::Reverse(t.0));
        RustLpm { tables: by_len }
    }
}

impl RouteLookup for RustLpm {
    #[inline]
    fn lookup(&self, dst: u32) -> Option<u32> {
        self.tables.iter().find_map(|(_, m, t)| t.get(&(dst & m)).copied())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(p: &str, side: Side, via: Option<&str>) -> Route {
        let (prefix, len) = Route::parse_prefix(p).unwrap();
        Route {
            prefix,
            len,
            side,
            via: via.map(|v| v.parse().unwrap()),
        }
    }

    #[test]
    fn the_longest_prefix_wins_and_the_default_route_catches_the_rest() {
        let routes = [
            r("0.0.0.0/0", Side::Outside, Some("10.10.2.254")),
            r("10.10.1.0/24", Side::Inside, None),
            r("10.10.1.128/25", Side::Outside, None),
            r("10.10.1.77/32", Side::Inside, Some("10.10.1.9")),
        ];
        let t = RustLpm::new(&routes);
        let ip = |s: &str| u32::from(s.parse::<Ipv4Addr>().unwrap());
        assert_eq!(t.lookup(ip("10.10.1.5")), Some(1));
        assert_eq!(t.lookup(ip("10.10.1.200")), Some(2));
        assert_eq!(t.lookup(ip("10.10.1.77")), Some(3));
        assert_eq!(t.lookup(ip("8.8.8.8")), Some(0));
        assert_eq!(RustLpm::new(&routes[1..]).lookup(ip("8.8.8.8")), None);
    }

    #[test]
    fn prefixes_parse_and_are_masked() {
        assert_eq!(
            Route::parse_prefix("10.10.1.7/24"),
            Some((Ipv4Addr::new(10, 10, 1, 0), 24))
        );
        assert_eq!(Route::parse_prefix("10.10.1.7/33"), None);
        assert_eq!(Route::parse_prefix("10.10.1/24"), None);
        assert_eq!(mask(0), 0);
        assert_eq!(mask(32), u32::MAX);
    }
}
