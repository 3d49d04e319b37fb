//! The NAT's session index: a fixed-size key to a slab position, in
//! buckets of one cache line (VPP's bihash and DPDK's `rte_hash` are built
//! the same way). A lookup reads one line, rarely two; and since a key's
//! line follows from its hash alone, the worker can ask for the lines of a
//! whole burst before the first lookup ([`FlowTable::prefetch`]), so the
//! misses of 32 packets overlap instead of stalling one packet each.
//!
//! Open addressing, linear probing slot by slot across buckets (a key's
//! probe starts at the first slot of its home bucket). A deletion shifts
//! the keys after it back into the hole instead of leaving a mark (Knuth's
//! algorithm R), so deleted slots never pile up: a table is rebuilt only to
//! grow, never to clear marks, and a table made big enough is never
//! rebuilt at all, however its sessions churn. Deterministic, like
//! everything that decides a NAT's ports (the same operations give the
//! same layout on the primary and the backup).

use crate::dpdk::huge::huge_vec;
use crate::dpdk::prefetch;

/// A key the table can hold: compared whole, hashed once.
pub trait FlowKey: Copy + Eq {
    /// Any value: what an empty slot holds (never compared).
    const FILLER: Self;
    /// A well-mixed, seedless hash (its low bits pick the bucket).
    fn flow_hash(&self) -> u64;
}

const EMPTY: u32 = u32::MAX;
/// The largest value the table holds.
pub const MAX_VALUE: u32 = EMPTY - 1;
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
    /// The table never has fewer buckets ([`FlowTable::with_capacity`]).
    min_buckets: usize,
    /// Times the table was rebuilt to grow (each a stall of its caller).
    rebuilds: u64,
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
            buckets: huge_vec(n, Bucket::EMPTY),
            len: 0,
            min_buckets: n,
            rebuilds: 0,
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

    /// Times the table was rebuilt to grow.
    pub fn rebuilds(&self) -> u64 {
        self.rebuilds
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
                if bucket.keys[i] == *key {
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
        loop {
            let bucket = &mut self.buckets[b];
            for i in 0..W {
                let v = bucket.vals[i];
                if v == EMPTY {
                    bucket.keys[i] = key;
                    bucket.vals[i] = value;
                    self.len += 1;
                    return None;
                }
                if bucket.keys[i] == key {
                    bucket.vals[i] = value;
                    return Some(v);
                }
            }
            b = (b + 1) & mask;
        }
    }

    /// Unmaps `key`; returns what it mapped to.
    pub fn remove(&mut self, key: &K) -> Option<u32> {
        let mask = self.buckets.len() - 1;
        let mut hole = (self.home(key.flow_hash()), 0);
        let v = loop {
            let (b, i) = hole;
            let v = self.buckets[b].vals[i];
            if v == EMPTY {
                return None;
            }
            if self.buckets[b].keys[i] == *key {
                break v;
            }
            hole = Self::next_slot(hole, mask);
        };
        // Every key after the hole up to the next empty slot moves back into
        // it if its probe passes the hole (starts at or before it), so no
        // probe meets an empty slot before its key; the last hole is emptied.
        let mut j = hole;
        loop {
            j = Self::next_slot(j, mask);
            let (k, kv) = (self.buckets[j.0].keys[j.1], self.buckets[j.0].vals[j.1]);
            if kv == EMPTY {
                break;
            }
            let home = self.home(k.flow_hash());
            let probed = |(b, i): (usize, usize)| (b.wrapping_sub(home) & mask) * W + i;
            if probed(hole) < probed(j) {
                self.buckets[hole.0].keys[hole.1] = k;
                self.buckets[hole.0].vals[hole.1] = kv;
                hole = j;
            }
        }
        self.buckets[hole.0].keys[hole.1] = K::FILLER;
        self.buckets[hole.0].vals[hole.1] = EMPTY;
        self.len -= 1;
        Some(v)
    }

    /// The slot a probe looks at after `(bucket, index)`.
    #[inline]
    fn next_slot((b, i): (usize, usize), mask: usize) -> (usize, usize) {
        if i + 1 < W {
            (b, i + 1)
        } else {
            ((b + 1) & mask, 0)
        }
    }

    /// Unmaps every key; the table keeps the size it was made with.
    pub fn clear(&mut self) {
        let rebuilds = self.rebuilds;
        *self = FlowTable::with_buckets(self.min_buckets);
        self.rebuilds = rebuilds;
    }

    /// Room for one more: keys fill at most 7/8 of the slots (so a probe
    /// always meets an empty slot); past that, the table is rebuilt with
    /// the keys at most half of it.
    fn reserve_one(&mut self) {
        let slots = self.buckets.len() * W;
        if (self.len + 1) * 8 <= slots * 7 {
            return;
        }
        let n = Self::buckets_for(self.len + 1).max(self.min_buckets);
        let old = std::mem::replace(&mut self.buckets, huge_vec(n, Bucket::EMPTY));
        self.len = 0;
        self.rebuilds += 1;
        for bucket in &old {
            for i in 0..W {
                if bucket.vals[i] != EMPTY {
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
            .filter(|(_, v)| **v != EMPTY)
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

    /// Churn at a steady population never rebuilds the table: a deletion
    /// leaves no mark to clear.
    #[test]
    fn churn_never_rebuilds_the_table() {
        let mut t: FlowTable<Key, 3> = FlowTable::new();
        for i in 0..1000 {
            t.insert(Key(i), i as u32);
        }
        let (bytes, rebuilds) = (t.bytes(), t.rebuilds());
        assert_eq!((bytes, rebuilds), (512 * 64, 6), "grown from 8 buckets to 512");
        for i in 1000..200_000 {
            assert_eq!(t.remove(&Key(i - 1000)), Some(i as u32 - 1000));
            assert_eq!(t.insert(Key(i), i as u32), None);
        }
        assert_eq!((t.len(), t.bytes(), t.rebuilds()), (1000, bytes, rebuilds));
        assert_eq!(t.get(&Key(199_999)), Some(199_999));
        assert_eq!(t.get(&Key(198_999)), None);
    }

    /// A key whose hash is given: its home bucket is chosen by the test.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    struct Homed(u64, u64);

    impl FlowKey for Homed {
        const FILLER: Homed = Homed(0, 0);
        fn flow_hash(&self) -> u64 {
            self.1
        }
    }

    /// A small table kept up to 20 of its 24 slots full, keys homed in
    /// every bucket and crowded in the last: clusters run into each other
    /// and round the end of the table, the cases where moving keys back after a deletion can
    /// go wrong. Checked against a HashMap on every key after every
    /// operation; the table is never rebuilt.
    #[test]
    fn deletion_keeps_every_key_reachable_in_a_crowded_table_that_wraps() {
        let mut c = Corpus::new(0x0005_b1f7);
        let mut t: FlowTable<Homed, 3> = FlowTable::with_capacity(12);
        assert_eq!(t.bytes(), 8 * 64);
        let mut m: HashMap<Homed, u32> = HashMap::new();
        // Eight keys homed in the last bucket (their cluster wraps to the
        // first), the others spread over all eight.
        let keys: Vec<Homed> = (0..20).map(|i| Homed(i, if i < 8 { 7 } else { i % 8 })).collect();
        for step in 0..50_000u32 {
            let k = keys[(c.next_u64() % 20) as usize];
            // Three inserts to a remove: most of the 20 keys are in.
            if !c.next_u64().is_multiple_of(4) {
                assert_eq!(t.insert(k, step), m.insert(k, step), "insert at {step}");
            } else {
                assert_eq!(t.remove(&k), m.remove(&k), "remove at {step}");
            }
            for k in &keys {
                assert_eq!(t.get(k), m.get(k).copied(), "{k:?} at {step}");
            }
        }
        assert_eq!((t.bytes(), t.rebuilds()), (8 * 64, 0));
    }
}
