//! The source MACs a backup saw per data port in the replication stream.
//!
//! After a takeover the new primary announces each of them on the *other*
//! data port (a RARP broadcast with that source MAC, as QEMU announces a
//! migrated guest), so learning switches move every host that sits behind
//! the node to the new primary's port at once. Bounded and direct-mapped: a
//! collision forgets a MAC, which then moves on its next packet.

use crate::wire::MacAddr;

pub struct MacTable {
    slots: Vec<Option<MacAddr>>,
}

impl MacTable {
    pub fn new(slots: usize) -> MacTable {
        MacTable {
            slots: vec![None; slots.max(1)],
        }
    }

    #[inline]
    pub fn learn(&mut self, mac: MacAddr) {
        if mac.is_multicast() || mac == MacAddr::ZERO {
            return;
        }
        let b = mac.0;
        let h = u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], 0, 0]).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        // The hash's high half scaled to the table by a multiply, not a
        // division: this runs for every packet a backup processes.
        let i = (((h >> 32) * self.slots.len() as u64) >> 32) as usize;
        if let Some(slot) = self.slots.get_mut(i) {
            if *slot != Some(mac) {
                *slot = Some(mac);
            }
        }
    }

    pub fn macs(&self) -> Vec<MacAddr> {
        self.slots.iter().flatten().copied().collect()
    }

    pub fn clear(&mut self) {
        self.slots.iter_mut().for_each(|s| *s = None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unicast_sources_are_learned_once_and_group_addresses_never() {
        let mut t = MacTable::new(64);
        let a = MacAddr([2, 0, 0, 0, 0, 1]);
        t.learn(a);
        t.learn(a);
        t.learn(MacAddr::BROADCAST);
        t.learn(MacAddr([1, 0, 0x5e, 0, 0, 1]));
        assert_eq!(t.macs(), vec![a]);
    }

    #[test]
    fn macs_that_differ_in_their_last_bytes_spread_over_the_whole_table() {
        // 2000 hosts 02:00:00:00:xx:yy. (Reducing the hash by a modulo
        // kept them in 8 slots of 64 or 256.)
        for (slots, at_least) in [(1, 1), (3, 3), (64, 64), (256, 256), (1000, 667)] {
            let mut t = MacTable::new(slots);
            for i in 0..2000u16 {
                let [x, y] = i.to_be_bytes();
                t.learn(MacAddr([2, 0, 0, 0, x, y]));
            }
            let n = t.macs().len();
            assert!((at_least..=slots).contains(&n), "{slots} slots hold {n}");
        }
    }
}
