//! The router's short-lived state: the rate limiters of ICMP errors and
//! ARP requests, and the packets held for a next hop's answer. Seconds of
//! replicated time at most, but what the router does next depends on it
//! (an error sent or not, a held packet sent at the answer), so a backup
//! brought into sync by a checkpoint needs the primary's: it goes whole, in
//! one chunk, again at a round's end whenever it changed during the round.
//!
//! Chunk ([`StateKind::RouterTransient`], version 2; `count` = packets):
//!
//! ```text
//! icmp nanotokens u64 | icmp last_ns u64 | arp nanotokens u64 | arp last_ns u64
//! packet* = next hop u32 | side u8 | since_ns u64 | length u16 | bytes
//! ```
//! An empty body (count 0) is a delta that says: unchanged.

use super::hash::fx;
use super::hold::HeldPackets;
use super::ratelimit::TokenBucket;
use super::state::{begin_chunk, open_variable_chunk, set_count, SessionState, StateError, StateKind};
use super::Side;
use crate::wire::{get_u16, get_u32, get_u64};

const BUCKETS: usize = 32;
const PACKET_HEADER: usize = 15;

pub struct Transient {
    icmp: TokenBucket,
    arp: TokenBucket,
    /// Changed only through the methods below, which count the change.
    held: HeldPackets,
    icmp_rate: u32,
    arp_rate: u32,
    gen: u64,
}

impl Transient {
    pub fn new(icmp_rate: u32, arp_rate: u32, hold_max: usize) -> Transient {
        Transient {
            icmp: TokenBucket::new(icmp_rate),
            arp: TokenBucket::new(arp_rate),
            held: HeldPackets::new(hold_max),
            icmp_rate,
            arp_rate,
            gen: 0,
        }
    }

    /// The packets held for a next hop (and their counters).
    pub fn held(&self) -> &HeldPackets {
        &self.held
    }

    /// A held packet that could not be sent after all (counted only: not
    /// part of the state).
    pub fn count_unsent(&mut self) {
        self.held.expired += 1;
    }

    /// A token for an ICMP error at `now` (the bucket changes either way).
    pub fn take_icmp(&mut self, now: u64) -> bool {
        self.gen += 1;
        self.icmp.take(now)
    }

    /// A token for an ARP request at `now`.
    pub fn take_arp(&mut self, now: u64) -> bool {
        self.gen += 1;
        self.arp.take(now)
    }

    /// [`HeldPackets::hold`], noted as a change.
    pub fn hold(&mut self, next_hop: u32, side: Side, frame: &[u8], now: u64) -> bool {
        self.gen += 1;
        self.held.hold(next_hop, side, frame, now)
    }

    /// [`HeldPackets::take`], noted as a change.
    pub fn take_held(&mut self, next_hop: u32, side: Side, now: u64) -> Option<Vec<u8>> {
        self.gen += 1;
        self.held.take(next_hop, side, now)
    }

    fn put_whole(&self, out: &mut Vec<u8>) {
        let at = begin_chunk(out, StateKind::RouterTransient);
        for (tokens, last) in [self.icmp.parts(), self.arp.parts()] {
            out.extend_from_slice(&tokens.to_be_bytes());
            out.extend_from_slice(&last.to_be_bytes());
        }
        let held = self.held.entries();
        for (ip, side, since, bytes) in &held {
            out.extend_from_slice(&ip.to_be_bytes());
            out.push(*side as u8);
            out.extend_from_slice(&since.to_be_bytes());
            out.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
            out.extend_from_slice(bytes);
        }
        set_count(out, at, held.len() as u32);
    }
}

impl SessionState for Transient {
    /// The whole of it, in one chunk.
    fn snapshot_chunk(&self, _cursor: usize, _max_records: usize, out: &mut Vec<u8>) -> Option<usize> {
        self.put_whole(out);
        None
    }

    /// Replaces the whole, once every part of the chunk has been checked.
    fn install_chunk(&mut self, chunk: &[u8]) -> Result<usize, StateError> {
        let (_, n, body) = open_variable_chunk(chunk, StateKind::RouterTransient, 2)?;
        if body.is_empty() && n == 0 {
            return Ok(0);
        }
        if body.len() < BUCKETS {
            return Err(StateError::Truncated);
        }
        let icmp = TokenBucket::from_parts(self.icmp_rate, get_u64(body, 0), get_u64(body, 8));
        let arp = TokenBucket::from_parts(self.arp_rate, get_u64(body, 16), get_u64(body, 24));
        let (Some(icmp), Some(arp)) = (icmp, arp) else {
            return Err(StateError::Rejected);
        };
        let mut held = HeldPackets::new(self.held.max());
        let mut rest = &body[BUCKETS..];
        for _ in 0..n {
            let h = rest.get(..PACKET_HEADER).ok_or(StateError::Truncated)?;
            let ip = get_u32(h, 0);
            let side = Side::from_index(h[4] as usize).ok_or(StateError::Rejected)?;
            let since = get_u64(h, 5);
            let len = get_u16(h, 13) as usize;
            let bytes = rest
                .get(PACKET_HEADER..PACKET_HEADER + len)
                .ok_or(StateError::Truncated)?;
            if !held.restore(ip, side, since, bytes) {
                return Err(StateError::Rejected);
            }
            rest = &rest[PACKET_HEADER + len..];
        }
        held.released = self.held.released;
        held.expired = self.held.expired;
        (self.icmp, self.arp, self.held) = (icmp, arp, held);
        self.gen += 1;
        Ok(n)
    }

    fn generation(&self) -> u64 {
        self.gen
    }

    /// The whole when it changed after `generation`, else an empty chunk.
    fn changed_since(&self, generation: u64, out: &mut Vec<u8>) -> Option<usize> {
        if self.gen > generation {
            self.put_whole(out);
            Some(self.held.len() + 1)
        } else {
            begin_chunk(out, StateKind::RouterTransient);
            Some(0)
        }
    }

    /// All of it in slice 0.
    fn digest(&self, slice: u32, _of: u32) -> u64 {
        if slice != 0 {
            return 0;
        }
        let mut whole = Vec::new();
        self.put_whole(&mut whole);
        fx(&whole)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    /// Buckets drawn down and two packets held.
    fn busy() -> Transient {
        let mut t = Transient::new(10, 5, 8);
        for _ in 0..7 {
            t.take_icmp(S);
        }
        t.take_arp(2 * S);
        assert!(t.hold(0x0a0a_0207, Side::Outside, b"syn to .7", 2 * S));
        assert!(t.hold(0x0a0a_0103, Side::Inside, b"echo to .3", 3 * S));
        t
    }

    fn whole(t: &Transient) -> Vec<u8> {
        let mut c = Vec::new();
        assert_eq!(t.snapshot_chunk(0, 32, &mut c), None, "one chunk");
        c
    }

    #[test]
    fn an_installed_copy_decides_and_releases_as_its_original() {
        let mut a = busy();
        let mut b = Transient::new(10, 5, 8);
        assert_eq!(b.install_chunk(&whole(&a)), Ok(2));
        assert_eq!(whole(&b), whole(&a));
        assert_eq!(b.digest(0, 4), a.digest(0, 4));
        // Three ICMP tokens left at 1 s; none refilled 0.1 s later (one).
        let take = |t: &mut Transient| (0..5).map(|_| t.take_icmp(S + S / 10)).collect::<Vec<_>>();
        assert_eq!(take(&mut a), take(&mut b));
        assert_eq!(take(&mut b), vec![false; 5]);
        assert_eq!(
            b.take_held(0x0a0a_0207, Side::Outside, 3 * S).as_deref(),
            Some(&b"syn to .7"[..])
        );
        assert_eq!(
            a.take_held(0x0a0a_0207, Side::Outside, 3 * S).as_deref(),
            Some(&b"syn to .7"[..])
        );
    }

    #[test]
    fn a_delta_is_the_whole_after_a_change_and_empty_without_one() {
        let mut a = busy();
        let mark = a.generation();
        let mut unchanged = Vec::new();
        assert_eq!(a.changed_since(mark, &mut unchanged), Some(0));
        let mut b = busy();
        b.take_arp(4 * S);
        assert_eq!(b.install_chunk(&unchanged), Ok(0), "an empty delta changes nothing");
        assert_ne!(whole(&b), whole(&a));
        a.take_icmp(5 * S);
        let mut changed = Vec::new();
        assert_eq!(a.changed_since(mark, &mut changed), Some(3));
        assert_eq!(b.install_chunk(&changed), Ok(2));
        assert_eq!(whole(&b), whole(&a));
    }

    #[test]
    fn a_bad_chunk_is_refused_and_changes_nothing() {
        let a = busy();
        let good = whole(&a);
        let mut b = Transient::new(10, 5, 8);
        let before = whole(&b);
        let mut overfull = good.clone();
        overfull[11..19].copy_from_slice(&(11 * S).to_be_bytes());
        let mut bad_side = good.clone();
        bad_side[11 + BUCKETS + 4] = 9;
        let mut long = good.clone();
        long[11 + BUCKETS + 13..11 + BUCKETS + 15].copy_from_slice(&999u16.to_be_bytes());
        for (name, c, e) in [
            ("more tokens than the bucket holds", overfull, StateError::Rejected),
            ("a side that is not one", bad_side, StateError::Rejected),
            ("a packet longer than the chunk", long, StateError::Truncated),
            ("cut in the buckets", good[..20].to_vec(), StateError::Truncated),
        ] {
            assert_eq!(b.install_chunk(&c), Err(e), "{name}");
            assert_eq!(whole(&b), before, "{name}: nothing changed");
        }
        let mut small = Transient::new(10, 5, 1);
        assert_eq!(
            small.install_chunk(&good),
            Err(StateError::Rejected),
            "more than it may hold"
        );
    }
}
