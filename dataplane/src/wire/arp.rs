//! ARP for IPv4 over Ethernet (RFC 826).

use super::ethernet::{EtherType, MacAddr};
use super::ipv4::Ipv4Addr;
use super::{get_u16, get_u32, set_u16, set_u32, Result, WireError};

mod field {
    use core::ops::Range;
    pub const HTYPE: usize = 0;
    pub const PTYPE: usize = 2;
    pub const HLEN: usize = 4;
    pub const PLEN: usize = 5;
    pub const OPER: usize = 6;
    pub const SHA: Range<usize> = 8..14;
    pub const SPA: usize = 14;
    pub const THA: Range<usize> = 18..24;
    pub const TPA: usize = 24;
}

pub const PACKET_LEN: usize = 28;

/// ARP operations.
pub struct ArpOp;

impl ArpOp {
    pub const REQUEST: u16 = 1;
    pub const REPLY: u16 = 2;
}

/// An ARP packet view. `new_checked` guarantees Ethernet/IPv4 sizes.
#[derive(Debug)]
pub struct ArpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> ArpPacket<T> {
    #[inline]
    pub fn new_unchecked(buffer: T) -> Self {
        ArpPacket { buffer }
    }

    /// Validates length and that this is Ethernet (1) / IPv4 with 6/4-byte
    /// addresses.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self> {
        let b = buffer.as_ref();
        if b.len() < PACKET_LEN {
            return Err(WireError::Truncated);
        }
        if get_u16(b, field::HTYPE) != 1
            || get_u16(b, field::PTYPE) != EtherType::IPV4
            || b[field::HLEN] != 6
            || b[field::PLEN] != 4
        {
            return Err(WireError::Malformed);
        }
        Ok(ArpPacket { buffer })
    }

    #[inline]
    pub fn operation(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::OPER)
    }

    #[inline]
    pub fn sender_mac(&self) -> MacAddr {
        let mut m = [0u8; 6];
        m.copy_from_slice(&self.buffer.as_ref()[field::SHA]);
        MacAddr(m)
    }

    #[inline]
    pub fn sender_ip(&self) -> Ipv4Addr {
        Ipv4Addr::from(get_u32(self.buffer.as_ref(), field::SPA))
    }

    #[inline]
    pub fn target_mac(&self) -> MacAddr {
        let mut m = [0u8; 6];
        m.copy_from_slice(&self.buffer.as_ref()[field::THA]);
        MacAddr(m)
    }

    #[inline]
    pub fn target_ip(&self) -> Ipv4Addr {
        Ipv4Addr::from(get_u32(self.buffer.as_ref(), field::TPA))
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> ArpPacket<T> {
    /// Writes a complete Ethernet/IPv4 ARP packet.
    #[inline]
    pub fn emit(&mut self, op: u16, sha: MacAddr, spa: Ipv4Addr, tha: MacAddr, tpa: Ipv4Addr) {
        let b = self.buffer.as_mut();
        set_u16(b, field::HTYPE, 1);
        set_u16(b, field::PTYPE, EtherType::IPV4);
        b[field::HLEN] = 6;
        b[field::PLEN] = 4;
        set_u16(b, field::OPER, op);
        b[field::SHA].copy_from_slice(&sha.0);
        set_u32(b, field::SPA, spa.into());
        b[field::THA].copy_from_slice(&tha.0);
        set_u32(b, field::TPA, tpa.into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emitted_request_parses_back() {
        let mut b = [0u8; PACKET_LEN];
        let mut p = ArpPacket::new_unchecked(&mut b[..]);
        p.emit(
            ArpOp::REQUEST,
            MacAddr([2, 0, 0, 0, 0, 1]),
            Ipv4Addr::new(10, 10, 1, 2),
            MacAddr::ZERO,
            Ipv4Addr::new(10, 10, 1, 1),
        );
        let p = ArpPacket::new_checked(&b[..]).unwrap();
        assert_eq!(p.operation(), ArpOp::REQUEST);
        assert_eq!(p.sender_ip(), Ipv4Addr::new(10, 10, 1, 2));
        assert_eq!(p.target_ip(), Ipv4Addr::new(10, 10, 1, 1));
        assert_eq!(p.sender_mac(), MacAddr([2, 0, 0, 0, 0, 1]));
    }

    #[test]
    fn non_ethernet_hardware_is_malformed() {
        let mut b = [0u8; PACKET_LEN];
        ArpPacket::new_unchecked(&mut b[..]).emit(
            ArpOp::REPLY,
            MacAddr::ZERO,
            Ipv4Addr::UNSPECIFIED,
            MacAddr::ZERO,
            Ipv4Addr::UNSPECIFIED,
        );
        b[1] = 6; // IEEE 802
        assert_eq!(ArpPacket::new_checked(&b[..]).unwrap_err(), WireError::Malformed);
        assert_eq!(ArpPacket::new_checked(&b[..27]).unwrap_err(), WireError::Truncated);
    }
}
