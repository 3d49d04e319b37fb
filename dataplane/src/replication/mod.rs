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

pub mod builder;
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
/// in the replication stream. FNV-1a over 8-byte words: cheap, and
/// collisions only cost a duplicate or a miss at takeover, never state.
#[inline]
pub fn frame_hash(frame: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ frame.len() as u64;
    let head = &frame[..frame.len().min(128)];
    let mut words = head.chunks_exact(8);
    for w in &mut words {
        let x = u64::from_le_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]]);
        h = (h ^ x).wrapping_mul(0x0000_0100_0000_01b3);
        h ^= h >> 29;
    }
    for &b in words.remainder() {
        h = (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^ (h >> 32)
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
}
