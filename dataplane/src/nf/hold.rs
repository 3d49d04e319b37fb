//! Packets waiting for their next hop's MAC.
//!
//! The first packet to an unresolved next hop (a TCP SYN, the first echo
//! request) is kept while the router asks for the MAC, and sent when the
//! answer is learned, as BSD's `la_hold` does: one packet per next hop,
//! later ones are dropped (counted `arp_pending`) until the answer comes.
//! Bounded in entries, and a held packet older than [`HOLD_NS`] of
//! replicated time is not sent. Deterministic like the rest of the
//! function: what is held and when it leaves depend only on the packets and
//! their time. Short-lived, but a checkpoint carries them
//! ([`super::transient`]): a backup that took over without them would not
//! send them at the answer.

use super::hash::FxHashMap;
use super::Side;

/// How long a held packet may wait for its next hop.
pub const HOLD_NS: u64 = 3_000_000_000;

struct Held {
    side: Side,
    since_ns: u64,
    bytes: Vec<u8>,
}

impl Held {
    /// Still worth sending at `now`.
    fn fresh(&self, now: u64) -> bool {
        now.saturating_sub(self.since_ns) <= HOLD_NS
    }
}

pub struct HeldPackets {
    max: usize,
    by_next_hop: FxHashMap<u32, Held>,
    /// Packets that waited longer than [`HOLD_NS`] and were not sent.
    pub expired: u64,
    /// Packets sent after their next hop answered.
    pub released: u64,
}

impl HeldPackets {
    pub fn new(max: usize) -> HeldPackets {
        HeldPackets {
            max,
            by_next_hop: FxHashMap::default(),
            expired: 0,
            released: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.by_next_hop.len()
    }

    /// How many it may hold.
    pub fn max(&self) -> usize {
        self.max
    }

    pub fn is_empty(&self) -> bool {
        self.by_next_hop.is_empty()
    }

    /// Keeps a copy of `frame` for `next_hop` on `side`; false when that
    /// next hop already has one waiting, or no room is left.
    pub fn hold(&mut self, next_hop: u32, side: Side, frame: &[u8], now: u64) -> bool {
        if let Some(h) = self.by_next_hop.get(&next_hop) {
            if h.fresh(now) {
                return false;
            }
            // A stale one gives its place to the newest.
            self.by_next_hop.remove(&next_hop);
            self.expired += 1;
        }
        if self.by_next_hop.len() >= self.max {
            self.purge(now);
            if self.by_next_hop.len() >= self.max {
                return false;
            }
        }
        self.by_next_hop.insert(
            next_hop,
            Held {
                side,
                since_ns: now,
                bytes: frame.to_vec(),
            },
        );
        true
    }

    /// The packet waiting for `next_hop` on `side`, if any and still fresh.
    pub fn take(&mut self, next_hop: u32, side: Side, now: u64) -> Option<Vec<u8>> {
        if self.by_next_hop.get(&next_hop)?.side != side {
            return None;
        }
        let h = self.by_next_hop.remove(&next_hop)?;
        if !h.fresh(now) {
            self.expired += 1;
            return None;
        }
        self.released += 1;
        Some(h.bytes)
    }

    /// Every held packet (next hop, side, since, bytes), by next hop.
    pub fn entries(&self) -> Vec<(u32, Side, u64, &[u8])> {
        let mut v: Vec<(u32, Side, u64, &[u8])> = self
            .by_next_hop
            .iter()
            .map(|(ip, h)| (*ip, h.side, h.since_ns, &h.bytes[..]))
            .collect();
        v.sort_unstable_by_key(|e| e.0);
        v
    }

    /// Puts back a packet [`HeldPackets::entries`] listed; false when the
    /// table is full or holds one for `next_hop` already.
    pub fn restore(&mut self, next_hop: u32, side: Side, since_ns: u64, bytes: &[u8]) -> bool {
        if self.by_next_hop.len() >= self.max || self.by_next_hop.contains_key(&next_hop) {
            return false;
        }
        self.by_next_hop.insert(
            next_hop,
            Held {
                side,
                since_ns,
                bytes: bytes.to_vec(),
            },
        );
        true
    }

    /// Forgets every stale packet (which ones, not in what order, is what
    /// matters: the result is the same on every node).
    fn purge(&mut self, now: u64) {
        let before = self.by_next_hop.len();
        self.by_next_hop.retain(|_, h| h.fresh(now));
        self.expired += (before - self.by_next_hop.len()) as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    #[test]
    fn one_packet_per_next_hop_is_held_and_taken_once() {
        let mut h = HeldPackets::new(4);
        assert!(h.hold(7, Side::Outside, b"first", 0));
        assert!(!h.hold(7, Side::Outside, b"second", 1), "one per next hop");
        assert_eq!(h.take(7, Side::Inside, 2), None, "only on its own side");
        assert_eq!(h.take(7, Side::Outside, 2).as_deref(), Some(&b"first"[..]));
        assert_eq!(h.take(7, Side::Outside, 3), None);
        assert_eq!((h.released, h.expired, h.len()), (1, 0, 0));
    }

    #[test]
    fn a_packet_held_too_long_is_not_sent_and_a_stale_one_is_replaced() {
        let mut h = HeldPackets::new(4);
        assert!(h.hold(7, Side::Outside, b"old", 0));
        assert_eq!(h.take(7, Side::Outside, HOLD_NS + 1), None);
        assert!(h.hold(8, Side::Outside, b"old", 0));
        assert!(h.hold(8, Side::Outside, b"new", 4 * S), "stale: replaced");
        assert_eq!(h.take(8, Side::Outside, 4 * S).as_deref(), Some(&b"new"[..]));
        assert_eq!((h.released, h.expired), (1, 2));
    }

    #[test]
    fn a_full_table_makes_room_only_from_stale_packets() {
        let mut h = HeldPackets::new(2);
        assert!(h.hold(1, Side::Outside, b"a", 0));
        assert!(h.hold(2, Side::Outside, b"b", S));
        assert!(!h.hold(3, Side::Outside, b"c", 2 * S), "full, nothing stale");
        assert!(h.hold(3, Side::Outside, b"c", HOLD_NS + S / 2), "the first went stale");
        assert_eq!((h.len(), h.expired), (2, 1));
    }
}
