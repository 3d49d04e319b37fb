//! The Internet checksum (RFC 1071) and its incremental update (RFC 1624).

/// One's-complement sum of `data` folded into 16 bits (not yet
/// complemented). Partial sums of this kind can be added in a `u32`
/// thousands of times without overflow, then [`finish`]ed.
#[inline]
pub fn sum(data: &[u8]) -> u32 {
    let mut acc: u64 = 0;
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        let w = u64::from_be_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
        // Add the two 32-bit halves; carries accumulate in the top bits.
        acc += w >> 32;
        acc += w & 0xffff_ffff;
    }
    let rest = chunks.remainder();
    let mut pairs = rest.chunks_exact(2);
    for p in &mut pairs {
        acc += u16::from_be_bytes([p[0], p[1]]) as u64;
    }
    if let [last] = pairs.remainder() {
        acc += (*last as u64) << 8;
    }
    fold64(acc)
}

/// Folds a 64-bit sum to 16 bits without a loop: 2^32 and 2^16 are both 1
/// modulo 0xffff, so each step keeps the value; four reach <= 0xffff.
#[inline]
fn fold64(acc: u64) -> u32 {
    let a = (acc & 0xffff_ffff) + (acc >> 32);
    let a = (a & 0xffff) + (a >> 16);
    let a = (a & 0xffff) + (a >> 16);
    let a = (a & 0xffff) + (a >> 16);
    a as u32
}

/// Whether an IPv4 header without options verifies. Its words are summed
/// as loaded, in the CPU's byte order: the one's-complement sum commutes
/// with swapping the bytes of every word (RFC 1071 section 2 (B)), so a good
/// header folds to 0xffff either way, and no word needs a byte swap.
#[inline(always)]
pub fn header20_verifies(h: &[u8; 20]) -> bool {
    let w = |i: usize| u32::from_ne_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]) as u64;
    fold64(w(0) + w(4) + w(8) + w(12) + w(16)) == 0xffff
}

/// The IPv4 header checksum after the TTL went down by one (TTL >= 1): the
/// TTL/protocol word lost 0x100, so ~m + m' is 0xfeff whatever the word,
/// and RFC 1624 eqn. 3 becomes HC' = ~(~HC + 0xfeff) — [`update16`] without
/// reading the word.
#[inline]
pub fn after_ttl_decrement(check: u16) -> u16 {
    finish((!check) as u32 + 0xfeff)
}

/// Folds a 32-bit sum to 16 bits: two steps reach <= 0xffff from any u32
/// (0xffff + 0xffff = 0x1fffe, then 0xfffe + 1), and neither turns a
/// nonzero sum into zero.
#[inline]
fn fold32(s: u32) -> u32 {
    let a = (s & 0xffff) + (s >> 16);
    (a & 0xffff) + (a >> 16)
}

/// Folds a 32-bit sum to 16 bits and complements it.
#[inline]
pub fn finish(s: u32) -> u16 {
    !(fold32(s) as u16)
}

/// The checksum of `data` (ready to store).
#[inline]
pub fn checksum(data: &[u8]) -> u16 {
    finish(sum(data))
}

/// Sum of the IPv4 pseudo-header for a transport checksum.
#[inline]
pub fn pseudo_header_sum(src: [u8; 4], dst: [u8; 4], protocol: u8, length: u16) -> u32 {
    let mut s = u16::from_be_bytes([src[0], src[1]]) as u32;
    s += u16::from_be_bytes([src[2], src[3]]) as u32;
    s += u16::from_be_bytes([dst[0], dst[1]]) as u32;
    s += u16::from_be_bytes([dst[2], dst[3]]) as u32;
    s += protocol as u32;
    s += length as u32;
    s
}

/// The 16-bit words that changed in a checksummed span, to patch its
/// checksum once: RFC 1624 eqn. 3, HC' = ~(~HC + ~m + m'), summed over the
/// words. A NAT rewrites an address and a port under one transport
/// checksum; one fold for all of them is a short dependency chain where a
/// word-by-word update would be a long one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Delta(u32);

impl Delta {
    /// A word changed from `old` to `new`. (Each adds at most 0x1fffe: a
    /// u32 holds thousands before it could overflow.)
    #[inline]
    pub fn word(self, old: u16, new: u16) -> Delta {
        Delta(self.0 + (!old) as u32 + new as u32)
    }

    /// A 32-bit field (an IPv4 address) changed.
    #[inline]
    pub fn dword(self, old: u32, new: u32) -> Delta {
        self.word((old >> 16) as u16, (new >> 16) as u16)
            .word(old as u16, new as u16)
    }

    /// The checksum `check` patched for every change.
    #[inline]
    pub fn apply(self, check: u16) -> u16 {
        finish((!check) as u32 + self.0)
    }
}

/// RFC 1624 eqn. 3 for one changed 16-bit word.
#[inline]
pub fn update16(check: u16, old: u16, new: u16) -> u16 {
    Delta::default().word(old, new).apply(check)
}

/// [`update16`] for a 32-bit field (an IPv4 address), in one fold.
#[inline]
pub fn update32(check: u16, old: u32, new: u32) -> u16 {
    Delta::default().dword(old, new).apply(check)
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 1071 section 3 example: 0001 f203 f4f5 f6f7 sums to ddf2.
    #[test]
    fn rfc1071_example_sums_to_ddf2() {
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(finish(sum(&data)), !0xddf2);
    }

    #[test]
    fn sum_of_all_ones_plus_pseudo_header_does_not_overflow() {
        // Reference: plain 16-bit one's-complement words summed in a u64.
        // addresses (4 words), protocol, length, 750 data words
        let reference = 4 * 0xffffu64 + 0xff + 0xffff + 750 * 0xffff;
        let s = pseudo_header_sum([255; 4], [255; 4], 255, 0xffff) + sum(&[0xff; 1500]);
        assert_eq!(finish(s), finish(fold64(reference)));
        assert_eq!(fold32(u32::MAX), 0xffff);
    }

    #[test]
    fn odd_length_pads_the_last_byte_with_zero() {
        assert_eq!(checksum(&[0x12, 0x34, 0x56]), checksum(&[0x12, 0x34, 0x56, 0x00]));
    }

    #[test]
    fn incremental_update_leaves_a_verifying_checksum_for_every_word_change() {
        // Bytes 0..2 hold the checksum of the whole buffer, as in an IP header.
        let mut data: Vec<u8> = (0..40u8).map(|i| i.wrapping_mul(37)).collect();
        for (old, new) in [
            (0x0000u16, 0xffffu16),
            (0x1234, 0xfedc),
            (0xffff, 0x0000),
            (0x8001, 0x8001),
        ] {
            data[10..12].copy_from_slice(&old.to_be_bytes());
            data[0..2].copy_from_slice(&[0, 0]);
            let c = checksum(&data);
            data[0..2].copy_from_slice(&c.to_be_bytes());
            data[10..12].copy_from_slice(&new.to_be_bytes());
            let c2 = update16(c, old, new);
            data[0..2].copy_from_slice(&c2.to_be_bytes());
            assert_eq!(checksum(&data), 0, "old {old:#x} new {new:#x}");
        }
    }

    #[test]
    fn update32_equals_two_word_updates() {
        let mut data = [0u8; 20];
        data[12..16].copy_from_slice(&[10, 0, 0, 1]);
        let c = checksum(&data);
        data[0..2].copy_from_slice(&c.to_be_bytes());
        data[12..16].copy_from_slice(&[192, 168, 7, 9]);
        let c2 = update32(c, 0x0a00_0001, 0xc0a8_0709);
        data[0..2].copy_from_slice(&c2.to_be_bytes());
        assert_eq!(checksum(&data), 0);
    }

    #[test]
    fn a_delta_of_several_fields_leaves_the_same_checksum_as_a_full_recompute() {
        // A 28-byte span (bytes 0..2: its checksum); rewrite an address
        // (bytes 12..16) and a port (bytes 20..22) at once, as a NAT does.
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut data = [0u8; 28];
        let corners = [0u32, 0xffff_ffff, 0x0000_ffff, 0xffff_0000, 1];
        for i in 0..20_000usize {
            for b in data.iter_mut() {
                *b = next() as u8;
            }
            data[0..2].copy_from_slice(&[0, 0]);
            let c = checksum(&data);
            data[0..2].copy_from_slice(&c.to_be_bytes());
            let (old_ip, old_port) = (
                u32::from_be_bytes([data[12], data[13], data[14], data[15]]),
                u16::from_be_bytes([data[20], data[21]]),
            );
            let new_ip = if i < corners.len() { corners[i] } else { next() as u32 };
            let new_port = if i < corners.len() {
                corners[i] as u16
            } else {
                next() as u16
            };
            data[12..16].copy_from_slice(&new_ip.to_be_bytes());
            data[20..22].copy_from_slice(&new_port.to_be_bytes());
            let patched = Delta::default().dword(old_ip, new_ip).word(old_port, new_port).apply(c);
            data[0..2].copy_from_slice(&patched.to_be_bytes());
            // Zero and 0xffff are the same one's-complement value: the span
            // verifies either way, as a receiver checks it.
            assert_eq!(checksum(&data), 0, "case {i}: {data:02x?}");
        }
    }

    #[test]
    fn a_header_verifies_in_native_order_exactly_when_its_checksum_is_good() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut good = 0;
        for i in 0..200_000 {
            let mut h = [0u8; 20];
            for b in h.iter_mut() {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *b = x as u8;
            }
            if i % 2 == 0 {
                // Half of them carry their right checksum.
                h[10..12].fill(0);
                let c = checksum(&h);
                h[10..12].copy_from_slice(&c.to_be_bytes());
            }
            let reference = finish(sum(&h)) == 0;
            good += reference as u32;
            assert_eq!(header20_verifies(&h), reference, "{h:02x?}");
        }
        assert!((100_000..100_100).contains(&good), "{good} verified");
    }

    #[test]
    fn the_ttl_decrement_patch_equals_rfc1624_for_every_checksum_and_ttl() {
        for ttl in 1..=255u16 {
            for proto in [1u16, 6, 17, 255] {
                let old = ttl << 8 | proto;
                let new = (ttl - 1) << 8 | proto;
                for check in (0..=u16::MAX).step_by(if proto == 17 { 1 } else { 251 }) {
                    assert_eq!(
                        after_ttl_decrement(check),
                        update16(check, old, new),
                        "ttl {ttl} check {check:#06x}"
                    );
                }
            }
        }
    }

    #[test]
    fn folding_keeps_the_value_modulo_0xffff_and_never_turns_a_sum_into_zero() {
        for acc in [
            0u64,
            1,
            0xffff,
            0x1_0000,
            0xffff_ffff,
            0x1_0000_0000,
            u64::MAX,
            0x8000_0000_8000_0001,
        ] {
            let f = fold64(acc) as u64;
            assert!(f <= 0xffff);
            assert_eq!(f % 0xffff, acc % 0xffff, "{acc:#x}");
            assert_eq!(f == 0, acc == 0, "{acc:#x}");
        }
    }
}
