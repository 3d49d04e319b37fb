//! A fixed, seedless hasher for the functions' tables: the same keys hash
//! the same way on the primary and the backup, run after run, so nothing
//! that depends on hash order (port probing, eviction) can diverge.

use std::hash::{BuildHasherDefault, Hasher};

/// FxHash (rustc's): a multiply and a rotate per word.
#[derive(Default, Clone, Copy)]
pub struct FxHasher {
    hash: u64,
}

const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl FxHasher {
    #[inline]
    fn add(&mut self, w: u64) {
        self.hash = (self.hash.rotate_left(5) ^ w).wrapping_mul(SEED);
    }
}

impl Hasher for FxHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.add(u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]));
        }
        for &b in chunks.remainder() {
            self.add(b as u64);
        }
    }

    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.add(i as u64);
    }

    #[inline]
    fn write_u16(&mut self, i: u16) {
        self.add(i as u64);
    }

    #[inline]
    fn write_u32(&mut self, i: u32) {
        self.add(i as u64);
    }

    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }

    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        self.hash
    }
}

pub type FxBuild = BuildHasherDefault<FxHasher>;
pub type FxHashMap<K, V> = std::collections::HashMap<K, V, FxBuild>;

/// The hash of one value (for deterministic choices such as a NAT port).
pub fn fx<T: std::hash::Hash>(v: &T) -> u64 {
    let mut h = FxHasher::default();
    v.hash(&mut h);
    h.finish()
}

/// One 64 x 64 -> 128-bit multiply, the halves folded together: every
/// output bit depends on every input bit (foldhash's mixer).
#[inline(always)]
pub fn fold_mul(x: u64, y: u64) -> u64 {
    let p = x as u128 * y as u128;
    (p as u64) ^ ((p >> 64) as u64)
}

/// The hash of a key packed into two words, in one multiply. The constants'
/// top bytes are set, which no packed key's words have (see the NAT's
/// keys), so neither factor can be zero.
#[inline(always)]
pub fn mix2(a: u64, b: u64) -> u64 {
    fold_mul(a ^ 0xa076_1d64_78bd_642f, b ^ 0xe703_7ed1_a0b4_28db)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_same_key_hashes_the_same_everywhere() {
        assert_eq!(
            super::fx(&(6u8, 0x0a0a_0102u32, 40000u16)),
            super::fx(&(6u8, 0x0a0a_0102u32, 40000u16))
        );
        assert_ne!(super::fx(&1u32), super::fx(&2u32));
    }

    #[test]
    fn two_words_that_differ_in_one_bit_hash_apart_in_the_low_and_high_bits() {
        // hashbrown indexes buckets by the low bits and tags by the top 7.
        let base = super::mix2(0x0011_0000_0a0a_0102, 0x0035_0a0a_0202);
        for bit in 0..56 {
            let h = super::mix2(0x0011_0000_0a0a_0102 ^ (1 << bit), 0x0035_0a0a_0202);
            assert_ne!(h & 0x7ff, base & 0x7ff, "bit {bit}: low bits");
            assert_ne!(h >> 57, base >> 57, "bit {bit}: top bits");
        }
    }
}
