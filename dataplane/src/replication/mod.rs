//! Replication: the primary turns every ingress packet into a replication
//! frame (DESIGN.md §3, §4); the backup follows the stream in sequence order,
//! keeps the egress it computed in a shadow ring, and keeps a window of the
//! ingress it saw on its own data ports so that, when it takes over, it can
//! both replay what the primary may not have sent and process what the
//! primary never replicated.
//!
//! - [`builder`]: replication frames as mbuf chains (zero-copy payload).
//! - [`seq`]: per-shard sequence continuity and the synchronized flag.
//! - [`shadow`]: the bounded shadow ring of backup egress, keyed by sequence.
//! - [`window`]: the bounded window of a backup's own ingress, and the
//!   matching that finds what the primary never replicated.
//! - [`learn`]: the MACs seen per side, announced after a takeover.
//! - [`handoff`]: a backup's copies of packets in transit between shards.
//! - [`flow`]: the backups' acknowledgments, and how far ahead of them a
//!   primary may run.

pub mod builder;
pub mod flow;
pub mod handoff;
pub mod learn;
pub mod seq;
pub mod shadow;
pub mod window;

pub use crate::wire::replication::{FrameType, ReplHeader, ReplicationFrame, HEADER_LEN};

/// Default destination of replication frames: a locally administered group
/// address, so one frame reaches every backup on the replication segment.
pub const DEFAULT_GROUP_MAC: [u8; 6] = [0x03, 0x4c, 0x53, 0x00, 0x00, 0x01];

/// Ethernet + replication header in front of the replicated frame.
pub const ENCAP_LEN: usize = crate::wire::ethernet::HEADER_LEN + HEADER_LEN;

/// A 64-bit hash of a frame as received: its length and its first 128 bytes
/// (headers with IP ids, ports, TCP sequence numbers, stream counters), used
/// to recognise on a backup the frames it saw both on its own data port and
/// in the replication stream. Each 16-byte block goes through one folded
/// multiply with seeds of its own position, and the blocks are independent
/// of each other, so a frame is a handful of multiplies side by side rather
/// than a chain of one per word (the backup hashes every packet twice).
/// Local to a node (never on the wire); collisions only cost a duplicate or
/// a miss at takeover, never state.
#[inline]
pub fn frame_hash(frame: &[u8]) -> u64 {
    use crate::nf::hash::fold_mul;
    const SEEDS: [u64; 9] = [
        0x243f_6a88_85a3_08d3,
        0x1319_8a2e_0370_7344,
        0xa409_3822_299f_31d0,
        0x082e_fa98_ec4e_6c89,
        0x4528_21e6_38d0_1377,
        0xbe54_66cf_34e9_0c6c,
        0xc0ac_29b7_c97c_50dd,
        0x3f84_d5b5_b547_0917,
        0x9216_d5d9_8979_fb1b,
    ];
    let head = &frame[..frame.len().min(128)];
    let word = |b: &[u8]| u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]);
    let mut h = (frame.len() as u64 ^ SEEDS[8]).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    let mut blocks = head.chunks_exact(16);
    for (i, b) in (&mut blocks).enumerate() {
        h ^= fold_mul(word(&b[..8]) ^ SEEDS[i], word(&b[8..]) ^ SEEDS[i].rotate_left(32));
    }
    let rest = blocks.remainder();
    if !rest.is_empty() {
        // The last 16 bytes of the head (overlapping the blocks before when
        // the head is that long), or the rest zero-padded.
        let mut last = [0u8; 16];
        if head.len() >= 16 {
            last.copy_from_slice(&head[head.len() - 16..]);
        } else {
            last[..rest.len()].copy_from_slice(rest);
        }
        h ^= fold_mul(word(&last[..8]) ^ SEEDS[8], word(&last[8..]) ^ SEEDS[7]);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_hash_tells_frames_apart_by_any_header_byte_and_by_length() {
        let a = vec![7u8; 200];
        let mut b = a.clone();
        b[77] = 8;
        assert_ne!(frame_hash(&a), frame_hash(&b));
        assert_ne!(frame_hash(&a), frame_hash(&a[..199]));
        assert_eq!(frame_hash(&a), frame_hash(&a.clone()));
        let mut c = a.clone();
        c[150] = 9; // beyond the hashed head: same hash
        assert_eq!(frame_hash(&a), frame_hash(&c));
    }

    #[test]
    fn frame_hash_tells_apart_frames_whose_blocks_are_swapped_or_whose_tail_differs() {
        let a: Vec<u8> = (0..60u8).collect();
        let mut swapped = a.clone();
        swapped[..16].copy_from_slice(&a[16..32]);
        swapped[16..32].copy_from_slice(&a[..16]);
        assert_ne!(frame_hash(&a), frame_hash(&swapped));
        for i in 0..60 {
            let mut b = a.clone();
            b[i] ^= 1;
            assert_ne!(frame_hash(&a), frame_hash(&b), "byte {i}");
        }
        for len in 0..16 {
            let short = &a[..len];
            let mut other = short.to_vec();
            if let Some(x) = other.last_mut() {
                *x ^= 0x80;
                assert_ne!(frame_hash(short), frame_hash(&other), "{len} bytes");
            }
        }
    }
}
