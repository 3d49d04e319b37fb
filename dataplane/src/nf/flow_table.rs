//! The NAT's session index: a fixed-size key to a slab position, in
//! buckets of one cache line (VPP's bihash and DPDK's `rte_hash` are built
//! the same way). A lookup reads one line, rarely two; and since a key's
//! line follows from its hash alone, the worker can ask for the lines of a
//! whole burst before the first lookup ([`FlowTable::prefetch`]), so the
//! misses of 32 packets overlap instead of stalling one packet each.
//!
//! Open addressing, linear probing over buckets, deleted slots marked and
//! reused, the whole table rebuilt in bucket order when it fills:
//! deterministic, like everything that decides a NAT's ports (the same
//! operations give the same layout on the primary and the backup).

use crate::dpdk::prefetch;

/// A key the table can hold: compared whole, hashed once.
pub trait FlowKey: Copy + Eq {
    /// Any value: what an empty slot holds (never compared).
    const FILLER: Self;
    /// A well-mixed, seedless hash (its low bits pick the bucket).
    fn flow_hash(&self) -> u64;
}

const EMPTY: u32 = u32::MAX;
const GONE: u32 = u32::MAX - 1;
/// The largest value the table holds.
pub const MAX_VALUE: u32 = GONE - 1;
const MIN_BUCKETS: usize = 8;

#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Bucket<K: FlowKey, const W: usize> {
    keys: [K; W],
    vals: [u32; W],
}

impl<K: FlowKey, const W: usize> Bucket<K, W> {
    const EMPTY: Self = Bucket {
        keys: [K::FILLER; W],
        vals: [EMPTY; W],
    };
}

/// An index of `W` slots per 64-byte bucket (`W` keys and `W` values must
/// fit in 64 bytes).
pub struct FlowTable<K: FlowKey, const W: usize> {
    buckets: Vec<Bucket<K, W>>,
    len: usize,
    /// Slots marked deleted: they lengthen probes until the next rebuild.
    gone: usize,
    /// The table never has fewer buckets ([`FlowTable::with_capacity`]).
    min_buckets: usize,
}

impl<K: FlowKey, const W: usize> Default for FlowTable<K, W> {
    fn default() -> Self {
        FlowTable::new()
    }
}

impl<K: FlowKey, const W: usize> FlowTable<K, W> {
    const FITS_A_LINE: () = assert!(std::mem::size_of::<Bucket<K, W>>() == 64);

    pub fn new() -> Self {
        FlowTable::with_buckets(MIN_BUCKETS)
    }

    /// A table sized for `live` keys from the start: it never grows (a
    /// rebuild of the whole table, which stalls its caller for as long as
    /// it takes) before it holds them.
    pub fn with_capacity(live: usize) -> Self {
        FlowTable::with_buckets(Self::buckets_for(live))
    }

    fn with_buckets(n: usize) -> Self {
        #[allow(clippy::let_unit_value)]
        let () = Self::FITS_A_LINE;
        FlowTable {
            buckets: vec![Bucket::EMPTY; n],
            len: 0,
            gone: 0,
            min_buckets: n,
        }
    }

    /// Buckets for `live` keys at most half of the slots (a power of two).
    fn buckets_for(live: usize) -> usize {
        let mut n = MIN_BUCKETS;
        while n * W < live.saturating_mul(2) {
            n *= 2;
        }
        n
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes the buckets take.
    pub fn bytes(&self) -> usize {
        self.buckets.len() * 64
    }

    #[inline]
    fn home(&self, hash: u64) -> usize {
        hash as usize & (self.buckets.len() - 1)
    }

    /// Asks the CPU for the line `key` is looked up in first.
    #[inline]
    pub fn prefetch(&self, key: &K) {
        prefetch(&self.buckets[self.home(key.flow_hash())]);
    }

    // Always inlined: a key built in registers and passed through memory
    // would be stored as u32 words and reloaded as u64s, a store-forwarding
    // stall of about as long as the lookup itself.
    #[inline(always)]
    pub fn get(&self, key: &K) -> Option<u32> {
        let mask = self.buckets.len() - 1;
        let mut b = self.home(key.flow_hash());
        // Ends: a rebuild keeps an empty slot in the table (see reserve).
        loop {
            let bucket = &self.buckets[b];
            for i in 0..W {
                let v = bucket.vals[i];
                if v == EMPTY {
                    return None;
                }
                if v != GONE && bucket.keys[i] == *key {
                    return Some(v);
                }
            }
            b = (b + 1) & mask;
        }
    }

    pub fn contains_key(&self, key: &K) -> bool {
        self.get(key).is_some()
    }

    /// Maps `key` to `value` (<= [`MAX_VALUE`]), replacing what it mapped
    /// to; returns the old value.
    pub fn insert(&mut self, key: K, value: u32) -> Option<u32> {
        debug_assert!(value <= MAX_VALUE);
        self.reserve_one();
        let mask = self.buckets.len() - 1;
        let mut b = self.home(key.flow_hash());
        let mut reuse: Option<(usize, usize)> = None;
        loop {
            for i in 0..W {
                let v = self.buckets[b].vals[i];
                if v == EMPTY {
                    let (rb, ri) = reuse.unwrap_or((b, i));
                    if reuse.is_some() {
                        self.gone -= 1;
                    }
                    self.buckets[rb].keys[ri] = key;
                    self.buckets[rb].vals[ri] = value;
                    self.len += 1;
                    return None;
                }
                if v == GONE {
                    reuse.get_or_insert((b, i));
                } else if self.buckets[b].keys[i] == key {
                    self.buckets[b].vals[i] = value;
                    return Some(v);
                }
            }
            b = (b + 1) & mask;
        }
    }

    /// Unmaps `key`; returns what it mapped to.
    pub fn remove(&mut self, key: &K) -> Option<u32> {
        let mask = self.buckets.len() - 1;
        let mut b = self.home(key.flow_hash());
        loop {
            for i in 0..W {
                let v = self.buckets[b].vals[i];
                if v == EMPTY {
                    return None;
                }
                if v != GONE && self.buckets[b].keys[i] == *key {
                    self.buckets[b].vals[i] = GONE;
                    self.len -= 1;
                    self.gone += 1;
                    return Some(v);
                }
            }
            b = (b + 1) & mask;
        }
    }

    pub fn clear(&mut self) {
        *self = FlowTable::with_buckets(self.min_buckets);
    }

    /// Room for one more: live and deleted slots stay at most 7/8 of the
    /// table (so a probe always meets an empty slot); past that, the table
    /// is rebuilt with the live keys at most half of it.
    fn reserve_one(&mut self) {
        let slots = self.buckets.len() * W;
        if (self.len + self.gone + 1) * 8 <= slots * 7 {
            return;
        }
        let n = Self::buckets_for(self.len + 1).max(self.min_buckets);
        let old = std::mem::replace(&mut self.buckets, vec![Bucket::EMPTY; n]);
        self.len = 0;
        self.gone = 0;
        for bucket in &old {
            for i in 0..W {
                if bucket.vals[i] < GONE {
                    self.insert(bucket.keys[i], bucket.vals[i]);
                }
            }
        }
    }
}

impl<K: FlowKey, const W: usize> FlowTable<K, W> {
    /// The live entries in bucket order (the layout two tables built by
    /// the same operations share).
    pub fn entries(&self) -> impl Iterator<Item = (K, u32)> + '_ {
        self.buckets
            .iter()
            .flat_map(|b| b.keys.iter().zip(b.vals.iter()))
            .filter(|(_, v)| **v < GONE)
            .map(|(k, v)| (*k, *v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fuzzing::Corpus;
    use std::collections::HashMap;

    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    struct Key(u64);

    impl FlowKey for Key {
        const FILLER: Key = Key(0);
        fn flow_hash(&self) -> u64 {
            crate::nf::hash::mix2(self.0 | 1 << 60, 0x9e37_79b9_7f4a_7c15)
        }
    }

    /// Every key in one bucket chain: the worst case for probing.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    struct Collide(u64);

    impl FlowKey for Collide {
        const FILLER: Collide = Collide(0);
        fn flow_hash(&self) -> u64 {
            7
        }
    }

    #[test]
    fn insert_get_replace_and_remove_answer_like_a_map() {
        let mut t: FlowTable<Key, 3> = FlowTable::new();
        assert_eq!(t.insert(Key(1), 10), None);
        assert_eq!(t.insert(Key(2), 20), None);
        assert_eq!(t.insert(Key(1), 11), Some(10));
        assert_eq!(
            (t.get(&Key(1)), t.get(&Key(2)), t.get(&Key(3))),
            (Some(11), Some(20), None)
        );
        assert_eq!(t.len(), 2);
        assert_eq!(t.remove(&Key(1)), Some(11));
        assert_eq!(t.remove(&Key(1)), None);
        assert_eq!((t.get(&Key(1)), t.len()), (None, 1));
        t.clear();
        assert!(t.is_empty());
        assert_eq!(t.get(&Key(2)), None);
    }

    /// A table made for `n` keys takes them without growing, and a cleared
    /// one keeps its size.
    #[test]
    fn a_table_made_for_n_keys_takes_them_without_growing() {
        let mut t: FlowTable<Key, 3> = FlowTable::with_capacity(5000);
        let bytes = t.bytes();
        assert_eq!(bytes, 4096 * 64, "5000 keys at most half of 3 x 4096 slots");
        for k in 0..5000 {
            assert_eq!(t.insert(Key(k), k as u32), None);
        }
        assert_eq!((t.len(), t.bytes()), (5000, bytes));
        assert_eq!(t.get(&Key(4321)), Some(4321));
        t.clear();
        assert_eq!((t.len(), t.bytes()), (0, bytes));
        let mut grown: FlowTable<Key, 3> = FlowTable::new();
        for k in 0..5000 {
            grown.insert(Key(k), k as u32);
        }
        assert!(grown.bytes() > MIN_BUCKETS * 64);
        grown.clear();
        assert_eq!(grown.bytes(), MIN_BUCKETS * 64, "a grown table clears to its start");
    }

    /// 200 000 random inserts, replaces and removes over a small key space
    /// (so deleted slots pile up and force rebuilds), checked against a
    /// HashMap after every operation.
    fn agrees_with_a_map<K: FlowKey + std::hash::Hash + std::fmt::Debug, const W: usize>(make: fn(u64) -> K) {
        let mut c = Corpus::new(0xf10e_7ab1);
        let mut t: FlowTable<K, W> = FlowTable::new();
        let mut m: HashMap<K, u32> = HashMap::new();
        for step in 0..200_000u32 {
            let k = make(c.next_u64() % 3000);
            match c.next_u64() % 3 {
                0 | 1 => assert_eq!(t.insert(k, step), m.insert(k, step), "insert at {step}"),
                _ => assert_eq!(t.remove(&k), m.remove(&k), "remove at {step}"),
            }
            assert_eq!(t.len(), m.len());
            let probe = make(c.next_u64() % 3000);
            assert_eq!(t.get(&probe), m.get(&probe).copied(), "get at {step}");
        }
        let mut live: Vec<(K, u32)> = t.entries().collect();
        live.sort_by_key(|e| e.1);
        let mut want: Vec<(K, u32)> = m.into_iter().collect();
        want.sort_by_key(|e| e.1);
        assert_eq!(live, want);
    }

    #[test]
    fn it_agrees_with_a_hash_map_through_growth_deletion_and_rebuilds() {
        agrees_with_a_map::<Key, 3>(Key);
    }

    #[test]
    fn it_agrees_with_a_hash_map_when_every_key_collides() {
        // Smaller: every operation walks the one chain.
        let mut t: FlowTable<Collide, 4> = FlowTable::new();
        for i in 0..500 {
            t.insert(Collide(i), i as u32);
        }
        for i in (0..500).step_by(2) {
            assert_eq!(t.remove(&Collide(i)), Some(i as u32));
        }
        for i in 0..500 {
            assert_eq!(t.get(&Collide(i)), (i % 2 == 1).then_some(i as u32), "key {i}");
        }
        assert_eq!(t.get(&Collide(10_000)), None, "a miss ends at an empty slot");
        assert_eq!(t.len(), 250);
    }

    #[test]
    fn the_same_operations_give_the_same_layout() {
        let build = || {
            let mut c = Corpus::new(42);
            let mut t: FlowTable<Key, 3> = FlowTable::new();
            for step in 0..50_000u32 {
                let k = Key(c.next_u64() % 5000);
                if c.next_u64().is_multiple_of(4) {
                    t.remove(&k);
                } else {
                    t.insert(k, step);
                }
            }
            t.entries().collect::<Vec<_>>()
        };
        let (a, b) = (build(), build());
        assert!(a.len() > 1000);
        assert_eq!(a, b);
    }

    #[test]
    fn deleted_slots_are_reused_and_the_table_does_not_grow_under_churn() {
        let mut t: FlowTable<Key, 3> = FlowTable::new();
        for i in 0..1000 {
            t.insert(Key(i), i as u32);
        }
        // Churn: as many removes as inserts, the live count steady. The
        // first rebuild may size the table for half load; after that the
        // deleted slots are cleared by rebuilds of the same size.
        let churn = |t: &mut FlowTable<Key, 3>, from: u64, to: u64| {
            for i in from..to {
                t.remove(&Key(i - 1000));
                t.insert(Key(i), i as u32);
            }
        };
        churn(&mut t, 1000, 20_000);
        let bytes = t.bytes();
        assert!(bytes <= 1000 * 2 / 3 * 64 * 2, "{bytes} bytes for 1000 keys");
        churn(&mut t, 20_000, 200_000);
        assert_eq!(t.len(), 1000);
        assert_eq!(t.bytes(), bytes, "rebuilt in place, not grown");
        assert_eq!(t.get(&Key(199_999)), Some(199_999));
        assert_eq!(t.get(&Key(198_999)), None);
    }
}
