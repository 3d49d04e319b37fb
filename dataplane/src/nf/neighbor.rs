//! The router's neighbour table (ARP cache): learned from ARP on each side,
//! bounded, evicting the least recently confirmed entry. Part of the
//! session context (a backup learns it from the replicated ARP packets; the
//! checkpoint carries it to a backup that joins late).

use super::hash::{fx, FxHashMap};
use super::state::{begin_chunk, open_chunk, set_count, SessionState, StateError, StateKind};
use super::Side;
use crate::wire::{get_u32, get_u64, MacAddr};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Neighbor {
    pub mac: MacAddr,
    pub side: Side,
    pub confirmed_ns: u64,
    gen: u64,
}

pub struct Neighbors {
    max: usize,
    map: FxHashMap<u32, Neighbor>,
    gen: u64,
    /// The last answer (ip, side, mac, generation it was read at): most
    /// packets go to the same next hop, and a hit costs two compares.
    last: std::cell::Cell<Option<(u32, Side, MacAddr, u64)>>,
}

impl Neighbors {
    pub fn new(max: usize) -> Neighbors {
        Neighbors {
            max: max.max(1),
            map: FxHashMap::default(),
            gen: 0,
            last: std::cell::Cell::new(None),
        }
    }

    #[inline(always)]
    pub fn get(&self, ip: u32, side: Side) -> Option<MacAddr> {
        if let Some((lip, lside, mac, gen)) = self.last.get() {
            if lip == ip && lside == side && gen == self.gen {
                return Some(mac);
            }
        }
        let mac = self.map.get(&ip).filter(|n| n.side == side).map(|n| n.mac)?;
        self.last.set(Some((ip, side, mac, self.gen)));
        Some(mac)
    }

    pub fn contains(&self, ip: u32) -> bool {
        self.map.contains_key(&ip)
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Learns or refreshes `ip` at `mac` on `side`.
    pub fn learn(&mut self, ip: u32, mac: MacAddr, side: Side, now: u64) {
        if !self.map.contains_key(&ip) && self.map.len() >= self.max {
            // Evict the least recently confirmed (ties: lowest address), a
            // choice that depends only on the table's contents.
            if let Some(old) = self
                .map
                .iter()
                .min_by_key(|(ip, n)| (n.confirmed_ns, **ip))
                .map(|(ip, _)| *ip)
            {
                self.map.remove(&old);
            }
        }
        self.gen += 1;
        self.map.insert(
            ip,
            Neighbor {
                mac,
                side,
                confirmed_ns: now,
                gen: self.gen,
            },
        );
    }

    /// Entries sorted by address (snapshots and `show` are stable).
    pub fn sorted(&self) -> Vec<(u32, Neighbor)> {
        let mut v: Vec<(u32, Neighbor)> = self.map.iter().map(|(k, n)| (*k, *n)).collect();
        v.sort_by_key(|(k, _)| *k);
        v
    }
}

/// Record: ip 4 | mac 6 | side 1 | confirmed_ns 8 = 19 bytes.
pub const NEIGHBOR_RECORD: usize = 19;

fn put(out: &mut Vec<u8>, ip: u32, n: &Neighbor) {
    out.extend_from_slice(&ip.to_be_bytes());
    out.extend_from_slice(&n.mac.0);
    out.push(n.side as u8);
    out.extend_from_slice(&n.confirmed_ns.to_be_bytes());
}

impl SessionState for Neighbors {
    fn snapshot_chunk(&self, cursor: usize, max_records: usize, out: &mut Vec<u8>) -> Option<usize> {
        let all = self.sorted();
        let at = begin_chunk(out, StateKind::Neighbors);
        let end = cursor.saturating_add(max_records).min(all.len());
        for (ip, n) in &all[cursor.min(end)..end] {
            put(out, *ip, n);
        }
        set_count(out, at, (end - cursor.min(end)) as u32);
        (end < all.len()).then_some(end)
    }

    fn install_chunk(&mut self, chunk: &[u8]) -> Result<usize, StateError> {
        let (_, n, body) = open_chunk(chunk, StateKind::Neighbors, |_| Some(NEIGHBOR_RECORD))?;
        for r in body.chunks_exact(NEIGHBOR_RECORD) {
            let ip = get_u32(r, 0);
            let mut mac = [0u8; 6];
            mac.copy_from_slice(&r[4..10]);
            let side = Side::from_index(r[10] as usize).ok_or(StateError::Rejected)?;
            self.learn(ip, MacAddr(mac), side, get_u64(r, 11));
        }
        Ok(n)
    }

    fn generation(&self) -> u64 {
        self.gen
    }

    /// Always whole: an eviction needs no tombstone, since installing the
    /// same entries evicts the same one (the choice depends only on the
    /// table's contents).
    fn changed_since(&self, generation: u64, out: &mut Vec<u8>) -> Option<usize> {
        let at = begin_chunk(out, StateKind::Neighbors);
        let changed: Vec<(u32, Neighbor)> = self.sorted().into_iter().filter(|(_, n)| n.gen > generation).collect();
        for (ip, n) in &changed {
            put(out, *ip, n);
        }
        set_count(out, at, changed.len() as u32);
        Some(changed.len())
    }

    fn digest(&self, slice: u32, of: u32) -> u64 {
        let of = of.max(1) as u64;
        self.sorted()
            .iter()
            .filter(|(ip, _)| fx(ip) % of == slice as u64)
            .fold(0, |d, (ip, n)| {
                let mut r = Vec::new();
                put(&mut r, *ip, n);
                d ^ fx(&r)
            })
    }
}
