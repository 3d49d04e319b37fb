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
//! algorithm R), so deleted slots never pile up and a table grows only
//! when its keys fill it.
//!
//! Growing never stops the caller for a whole table's worth of work: the
//! bigger table is written empty a few buckets per insert once the table
//! is 3/4 full, and after the switch the old table's keys move over a few
//! slots per insert while look-ups read both (the new one first). Every
//! step is driven by inserts alone: deterministic, like everything that
//! decides a NAT's ports (the same operations give the same layout on the
//! primary and the backup).

use super::reclaim::free_elsewhere;
use crate::dpdk::huge::huge_vec;
use crate::dpdk::prefetch;

/// A key the table can hold: compared whole, hashed once.
pub trait FlowKey: Copy + Eq + Send + 'static {
    /// Any value: what an empty slot holds (never compared).
    const FILLER: Self;
    /// A well-mixed, seedless hash (its low bits pick the bucket).
    fn flow_hash(&self) -> u64;
}

const EMPTY: u32 = u32::MAX;
/// The largest value the table holds.
pub const MAX_VALUE: u32 = EMPTY - 1;
const MIN_BUCKETS: usize = 8;
/// Buckets of the next table written per insert. From 3/4 to 7/8 full a
/// table takes 1/8 of its slots in inserts, and the next one has at most 4
/// times its buckets: 32 / W per insert would do, 16 leaves room.
const FILL_PER_INSERT: usize = 16;
/// Slots of the old table looked at per insert (each moved key counts
/// one): the old table is empty long before the new one fills.
const MOVE_PER_INSERT: usize = 8;

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
    /// Keys in `buckets` and `old` together.
    len: usize,
    /// The table never has fewer buckets ([`FlowTable::with_capacity`]).
    min_buckets: usize,
    /// Times the table grew.
    growths: u64,
    /// The table before the last growth while its keys move into
    /// `buckets`; empty otherwise. Every key is in one table only.
    old: Vec<Bucket<K, W>>,
    old_len: usize,
    /// Slots of `old` below this one are empty: moved, and nothing is
    /// ever written into `old`.
    moved: usize,
    /// The next table, written empty a few buckets per insert.
    next: Vec<Bucket<K, W>>,
    /// Growths that had to write their table or move keys all at once
    /// (the steps per insert fell behind; never, by the sizes above).
    late: u64,
}

impl<K: FlowKey, const W: usize> Default for FlowTable<K, W> {
    fn default() -> Self {
        FlowTable::new()
    }
}

impl<K: FlowKey, const W: usize> FlowTable<K, W> {
    const FITS_A_LINE: () = assert!(std::mem::size_of::<Bucket<K, W>>() == 64);

    pub fn new() -> Self {
        FlowTable::with_buckets(vec![Bucket::EMPTY; MIN_BUCKETS])
    }

    /// A table sized for `live` keys from the start, its memory touched
    /// now, on huge pages: it never grows before it holds them. `None`
    /// when the memory cannot be had.
    pub fn with_capacity(live: usize) -> Option<Self> {
        Some(FlowTable::with_buckets(huge_vec(
            Self::buckets_for(live),
            Bucket::EMPTY,
        )?))
    }

    fn with_buckets(buckets: Vec<Bucket<K, W>>) -> Self {
        #[allow(clippy::let_unit_value)]
        let () = Self::FITS_A_LINE;
        let n = buckets.len();
        FlowTable {
            buckets,
            len: 0,
            min_buckets: n,
            growths: 0,
            old: Vec::new(),
            old_len: 0,
            moved: 0,
            next: Vec::new(),
            late: 0,
        }
    }

    /// Bytes of a table made for `live` keys ([`FlowTable::with_capacity`]).
    pub fn bytes_for(live: usize) -> usize {
        Self::buckets_for(live).saturating_mul(64)
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

    /// Bytes the tables take (during a growth, the old one too).
    pub fn bytes(&self) -> usize {
        (self.buckets.len() + self.old.len() + self.next.len()) * 64
    }

    /// Times the table grew.
    pub fn growths(&self) -> u64 {
        self.growths
    }

    /// Growths whose steps per insert fell behind (see `late`).
    pub fn late_growths(&self) -> u64 {
        self.late
    }

    /// Whether keys of the table before the last growth are still moving.
    pub fn is_moving(&self) -> bool {
        !self.old.is_empty()
    }

    #[inline(always)]
    fn home_in(buckets: &[Bucket<K, W>], hash: u64) -> usize {
        hash as usize & (buckets.len() - 1)
    }

    /// Whether the old table may hold a key of this hash: not if its probe
    /// would start among the slots already emptied (no memory read, where
    /// the probe itself would miss the cache to meet an empty slot).
    #[inline(always)]
    fn old_may_hold(&self, hash: u64) -> bool {
        !self.old.is_empty() && Self::home_in(&self.old, hash) * W >= self.moved
    }

    /// Asks the CPU for the line `key` is looked up in first.
    #[inline]
    pub fn prefetch(&self, key: &K) {
        let hash = key.flow_hash();
        prefetch(&self.buckets[Self::home_in(&self.buckets, hash)]);
        if self.old_may_hold(hash) {
            prefetch(&self.old[Self::home_in(&self.old, hash)]);
        }
    }

    // Always inlined: a key built in registers and passed through memory
    // would be stored as u32 words and reloaded as u64s, a store-forwarding
    // stall of about as long as the lookup itself.
    #[inline(always)]
    pub fn get(&self, key: &K) -> Option<u32> {
        // A miss ends in the old table's look-up, which takes the key by
        // value: by reference, the key would be stored for it on every
        // look-up and reloaded for the hash (the stall above).
        let hash = key.flow_hash();
        Self::probe(&self.buckets, key, hash, || {
            if self.old.is_empty() {
                None
            } else {
                self.get_old(*key, hash)
            }
        })
    }

    /// The look-up in the old table, out of the fast path's way: it runs
    /// only for a miss while a growth's keys move.
    #[cold]
    #[inline(never)]
    fn get_old(&self, key: K, hash: u64) -> Option<u32> {
        if self.old_may_hold(hash) {
            Self::probe(&self.old, &key, hash, || None)
        } else {
            None
        }
    }

    /// `key`'s value in `buckets`, or what `miss` says when the probe
    /// meets an empty slot first (keys fill at most 7/8 of a table, see
    /// reserve_one, so it always does).
    #[inline(always)]
    fn probe(buckets: &[Bucket<K, W>], key: &K, hash: u64, miss: impl FnOnce() -> Option<u32>) -> Option<u32> {
        let mask = buckets.len() - 1;
        let mut b = Self::home_in(buckets, hash);
        loop {
            let bucket = &buckets[b];
            for i in 0..W {
                let v = bucket.vals[i];
                if v == EMPTY {
                    return miss();
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
        self.step();
        self.reserve_one();
        // A key still in the old table moves with its new value.
        let hash = key.flow_hash();
        let before = if self.old_may_hold(hash) {
            Self::delete(&mut self.old, &key, hash)
        } else {
            None
        };
        if before.is_some() {
            self.old_len -= 1;
            self.len -= 1;
        }
        let replaced = Self::put(&mut self.buckets, key, hash, value);
        if replaced.is_none() {
            self.len += 1;
        }
        before.or(replaced)
    }

    /// Writes `key` into `buckets`: over its value if there, else into
    /// the first empty slot of its probe. Returns the value replaced.
    #[inline]
    fn put(buckets: &mut [Bucket<K, W>], key: K, hash: u64, value: u32) -> Option<u32> {
        let mask = buckets.len() - 1;
        let mut b = Self::home_in(buckets, hash);
        loop {
            let bucket = &mut buckets[b];
            for i in 0..W {
                let v = bucket.vals[i];
                if v == EMPTY {
                    bucket.keys[i] = key;
                    bucket.vals[i] = value;
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
        let hash = key.flow_hash();
        let mut v = Self::delete(&mut self.buckets, key, hash);
        if v.is_none() && self.old_may_hold(hash) {
            v = Self::delete(&mut self.old, key, hash);
            if v.is_some() {
                self.old_len -= 1;
            }
        }
        if v.is_some() {
            self.len -= 1;
            // Fallen well below the 3/4 that started writing the next
            // table: it would be held, at up to four times this one's
            // size, for a growth that may not come.
            if self.next.capacity() > 0 && self.len * 8 < self.buckets.len() * W * 5 {
                free_elsewhere(std::mem::take(&mut self.next));
            }
        }
        v
    }

    /// Unmaps `key` in `buckets`; returns what it mapped to.
    fn delete(buckets: &mut [Bucket<K, W>], key: &K, hash: u64) -> Option<u32> {
        let mask = buckets.len() - 1;
        let mut at = (Self::home_in(buckets, hash), 0);
        loop {
            let v = buckets[at.0].vals[at.1];
            if v == EMPTY {
                return None;
            }
            if buckets[at.0].keys[at.1] == *key {
                Self::delete_at(buckets, at);
                return Some(v);
            }
            at = Self::next_slot(at, mask);
        }
    }

    /// Empties the slot `hole` (bucket, index): every key after it up to
    /// the next empty slot moves back into it if its probe passes the hole
    /// (starts at or before it), so no probe meets an empty slot before
    /// its key; the last hole is emptied.
    fn delete_at(buckets: &mut [Bucket<K, W>], mut hole: (usize, usize)) {
        let mask = buckets.len() - 1;
        let mut j = hole;
        loop {
            j = Self::next_slot(j, mask);
            let (k, kv) = (buckets[j.0].keys[j.1], buckets[j.0].vals[j.1]);
            if kv == EMPTY {
                break;
            }
            let home = Self::home_in(buckets, k.flow_hash());
            let probed = |(b, i): (usize, usize)| (b.wrapping_sub(home) & mask) * W + i;
            if probed(hole) < probed(j) {
                buckets[hole.0].keys[hole.1] = k;
                buckets[hole.0].vals[hole.1] = kv;
                hole = j;
            }
        }
        buckets[hole.0].keys[hole.1] = K::FILLER;
        buckets[hole.0].vals[hole.1] = EMPTY;
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
        if self.buckets.len() == self.min_buckets {
            // In place: a table made big up front is not made again.
            self.buckets.fill(Bucket::EMPTY);
        } else {
            free_elsewhere(std::mem::replace(
                &mut self.buckets,
                vec![Bucket::EMPTY; self.min_buckets],
            ));
        }
        free_elsewhere(std::mem::take(&mut self.old));
        free_elsewhere(std::mem::take(&mut self.next));
        (self.len, self.old_len, self.moved) = (0, 0, 0);
    }

    /// The buckets the table grows to from `buckets` buckets: those for
    /// the keys that make it 7/8 full (see reserve_one).
    fn next_size(&self) -> usize {
        Self::buckets_for(self.buckets.len() * W * 7 / 8 + 1).max(self.min_buckets)
    }

    /// An insert's share of a growth: moves keys out of the old table
    /// while there is one, else writes part of the next table once this
    /// one is 3/4 full.
    fn step(&mut self) {
        if !self.old.is_empty() {
            self.move_some(MOVE_PER_INSERT);
            return;
        }
        let slots = self.buckets.len() * W;
        if self.len * 4 < slots * 3 {
            return;
        }
        let n = self.next_size();
        // Small pages: a huge page's first touch may have the kernel
        // compact memory for milliseconds, in the worker.
        if self.next.capacity() < n {
            self.next = Vec::with_capacity(n);
        }
        let to = (self.next.len() + FILL_PER_INSERT).min(n);
        self.next.resize(to, Bucket::EMPTY);
    }

    /// Moves the keys of up to `budget` slots of the old table (in slot
    /// order) into the new one; lets the old table go once it is empty.
    fn move_some(&mut self, budget: usize) {
        let slots = self.old.len() * W;
        for _ in 0..budget {
            if self.moved == slots {
                break;
            }
            let at = (self.moved / W, self.moved % W);
            let v = self.old[at.0].vals[at.1];
            if v == EMPTY {
                self.moved += 1;
                continue;
            }
            // The slot may take the next key back: looked at again.
            let k = self.old[at.0].keys[at.1];
            Self::delete_at(&mut self.old, at);
            self.old_len -= 1;
            Self::put(&mut self.buckets, k, k.flow_hash(), v);
        }
        if self.moved == slots {
            debug_assert_eq!(self.old_len, 0);
            free_elsewhere(std::mem::take(&mut self.old));
            self.moved = 0;
        }
    }

    /// Room for one more: keys fill at most 7/8 of a table's slots (so a
    /// probe always meets an empty slot); past that, the table grows to
    /// keep them at most half of it.
    fn reserve_one(&mut self) {
        let slots = self.buckets.len() * W;
        if (self.len - self.old_len + 1) * 8 <= slots * 7 {
            return;
        }
        let n = Self::buckets_for(self.len + 1).max(self.min_buckets);
        if !self.old.is_empty() || self.next.len() != n {
            self.late += 1;
        }
        // Behind (never, by the sizes above): the rest at once.
        self.move_some(usize::MAX);
        if self.next.len() != n {
            self.next = vec![Bucket::EMPTY; n];
        }
        self.old = std::mem::replace(&mut self.buckets, std::mem::take(&mut self.next));
        self.old_len = self.len;
        self.moved = 0;
        self.growths += 1;
    }
}

impl<K: FlowKey, const W: usize> FlowTable<K, W> {
    /// The live entries: the old table's still moving, then the table's,
    /// each in bucket order (the layout two tables built by the same
    /// operations share).
    pub fn entries(&self) -> impl Iterator<Item = (K, u32)> + '_ {
        self.old
            .iter()
            .chain(self.buckets.iter())
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
        let mut t: FlowTable<Key, 3> = FlowTable::with_capacity(5000).expect("320 KiB");
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

    /// 200 000 random inserts, replaces and removes over a key space that
    /// widens as they go (so the table grows all along, and clusters form,
    /// shift and move while keys are replaced and removed), checked
    /// against a HashMap after every operation.
    fn agrees_with_a_map<K: FlowKey + std::hash::Hash + std::fmt::Debug, const W: usize>(make: fn(u64) -> K) {
        let mut c = Corpus::new(0xf10e_7ab1);
        let mut t: FlowTable<K, W> = FlowTable::new();
        let mut m: HashMap<K, u32> = HashMap::new();
        let mut moving = 0;
        for step in 0..200_000u32 {
            let keys = 3000 + step as u64 / 4;
            let k = make(c.next_u64() % keys);
            match c.next_u64() % 3 {
                0 | 1 => assert_eq!(t.insert(k, step), m.insert(k, step), "insert at {step}"),
                _ => assert_eq!(t.remove(&k), m.remove(&k), "remove at {step}"),
            }
            assert_eq!(t.len(), m.len());
            let probe = make(c.next_u64() % keys);
            assert_eq!(t.get(&probe), m.get(&probe).copied(), "get at {step}");
            moving += t.is_moving() as u32;
        }
        assert!(moving > 10_000, "{moving} operations while keys moved");
        assert_eq!(t.late_growths(), 0);
        let mut live: Vec<(K, u32)> = t.entries().collect();
        live.sort_by_key(|e| e.1);
        let mut want: Vec<(K, u32)> = m.into_iter().collect();
        want.sort_by_key(|e| e.1);
        assert_eq!(live, want);
    }

    #[test]
    fn it_agrees_with_a_hash_map_through_growth_moves_and_deletion() {
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

    /// Churn at a steady population never grows the table: a deletion
    /// leaves no mark to clear.
    #[test]
    fn churn_never_grows_the_table() {
        let mut t: FlowTable<Key, 3> = FlowTable::new();
        for i in 0..1000 {
            t.insert(Key(i), i as u32);
        }
        let (bytes, growths) = (t.bytes(), t.growths());
        assert_eq!((bytes, growths), (512 * 64, 6), "grown from 8 buckets to 512");
        for i in 1000..200_000 {
            assert_eq!(t.remove(&Key(i - 1000)), Some(i as u32 - 1000));
            assert_eq!(t.insert(Key(i), i as u32), None);
        }
        assert_eq!((t.len(), t.bytes(), t.growths()), (1000, bytes, growths));
        assert_eq!(t.get(&Key(199_999)), Some(199_999));
        assert_eq!(t.get(&Key(198_999)), None);
    }

    /// Growing never does a whole table's work in one insert: the next
    /// table is written ahead, a few buckets per insert, and the old
    /// table's keys move a few slots per insert while both are read.
    #[test]
    fn growth_is_spread_over_the_inserts_around_it() {
        let mut t: FlowTable<Key, 3> = FlowTable::new();
        let (mut moving_for, mut longest) = (0usize, 0usize);
        for k in 0..300_000u64 {
            let grew = t.growths();
            assert_eq!(t.insert(Key(k), k as u32), None);
            if t.growths() != grew {
                assert!(t.is_moving(), "insert {k} started moving keys, not all of them");
            }
            if t.is_moving() {
                moving_for += 1;
                // Keys still in the old table are found there.
                assert_eq!(t.get(&Key(k / 2)), Some((k / 2) as u32));
            } else {
                longest = longest.max(moving_for);
                moving_for = 0;
            }
        }
        // 8 to 131 072 buckets; the last move emptied 65 536 buckets of 3
        // slots, 8 looked at per insert (a slot a key left is looked at
        // again: at most twice each).
        assert_eq!((t.growths(), t.late_growths()), (14, 0));
        // Past 3/4 full: the next table (262 144 buckets) is being written.
        assert!(t.bytes() > 131_072 * 64, "{}", t.bytes());
        assert!(longest <= 2 * 65_536 * 3 / MOVE_PER_INSERT, "{longest} inserts moving");
        assert!(longest >= 65_536 * 3 / MOVE_PER_INSERT / 2, "{longest} inserts moving");
        assert_eq!(t.entries().count(), 300_000);
    }

    #[test]
    fn a_next_table_written_for_a_growth_that_does_not_come_is_let_go() {
        let mut t: FlowTable<Key, 3> = FlowTable::new();
        let mut k = 0u64;
        // Past 3/4 full, no key moving: the next table is being written.
        while t.next.is_empty() || t.is_moving() {
            t.insert(Key(k), k as u32);
            k += 1;
        }
        let (slots, grew) = (t.buckets.len() * 3, t.growths());
        let mut gone = 0u64;
        while t.len * 4 >= slots * 3 {
            t.remove(&Key(gone));
            gone += 1;
        }
        assert!(t.next.capacity() > 0, "kept just below 3/4: no back and forth");
        while t.len * 8 >= slots * 5 {
            t.remove(&Key(gone));
            gone += 1;
        }
        assert_eq!(t.next.capacity(), 0, "let go below 5/8");
        // Filled up again, it grows as ever.
        while t.growths() == grew || t.is_moving() {
            t.insert(Key(k), k as u32);
            k += 1;
        }
        assert_eq!(t.late_growths(), 0);
        assert_eq!(t.len(), (k - gone) as usize);
        assert!((gone..k).all(|i| t.get(&Key(i)) == Some(i as u32)));
        assert!((0..gone).all(|i| t.get(&Key(i)).is_none()));
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
        let mut t: FlowTable<Homed, 3> = FlowTable::with_capacity(12).expect("512 bytes");
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
        assert_eq!(t.growths(), 0);
    }
}
