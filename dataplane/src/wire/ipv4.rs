//! IPv4 headers (RFC 791).

use super::checksum;
use super::{get_u16, get_u32, set_u16, set_u32, Result, WireError};

pub use std::net::Ipv4Addr;

/// IP protocol numbers lockstep looks at.
pub struct IpProtocol;

impl IpProtocol {
    pub const ICMP: u8 = 1;
    pub const TCP: u8 = 6;
    pub const UDP: u8 = 17;
    pub const ESP: u8 = 50;
}

mod field {
    pub const VER_IHL: usize = 0;
    pub const TOS: usize = 1;
    pub const TOTAL_LEN: usize = 2;
    pub const IDENT: usize = 4;
    pub const FLAGS_FRAG: usize = 6;
    pub const TTL: usize = 8;
    pub const PROTOCOL: usize = 9;
    pub const CHECKSUM: usize = 10;
    pub const SRC: usize = 12;
    pub const DST: usize = 16;
}

/// Length of a header without options.
pub const MIN_HEADER_LEN: usize = 20;
/// Longest header (IHL = 15).
pub const MAX_HEADER_LEN: usize = 60;

/// An IPv4 packet view. `new_checked` guarantees: version 4, 20 <= header
/// length <= total length <= buffer length.
#[derive(Debug)]
pub struct Ipv4Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv4Packet<T> {
    #[inline]
    pub fn new_unchecked(buffer: T) -> Self {
        Ipv4Packet { buffer }
    }

    /// Validates version, header length and total length (not the checksum:
    /// see [`Ipv4Packet::verify_checksum`]).
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self> {
        let b = buffer.as_ref();
        if b.len() < MIN_HEADER_LEN {
            return Err(WireError::Truncated);
        }
        if b[field::VER_IHL] >> 4 != 4 {
            return Err(WireError::Malformed);
        }
        let ihl = ((b[field::VER_IHL] & 0x0f) as usize) * 4;
        if ihl < MIN_HEADER_LEN {
            return Err(WireError::Malformed);
        }
        let total = get_u16(b, field::TOTAL_LEN) as usize;
        if total < ihl {
            return Err(WireError::Malformed);
        }
        if b.len() < total || b.len() < ihl {
            return Err(WireError::Truncated);
        }
        Ok(Ipv4Packet { buffer })
    }

    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    #[inline]
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_IHL] >> 4
    }

    #[inline]
    pub fn header_len(&self) -> usize {
        ((self.buffer.as_ref()[field::VER_IHL] & 0x0f) as usize) * 4
    }

    #[inline]
    pub fn tos(&self) -> u8 {
        self.buffer.as_ref()[field::TOS]
    }

    #[inline]
    pub fn total_len(&self) -> usize {
        get_u16(self.buffer.as_ref(), field::TOTAL_LEN) as usize
    }

    #[inline]
    pub fn ident(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::IDENT)
    }

    /// Fragment offset (in 8-byte units) or the more-fragments flag set.
    #[inline]
    pub fn is_fragment(&self) -> bool {
        get_u16(self.buffer.as_ref(), field::FLAGS_FRAG) & 0x3fff != 0
    }

    /// Fragment offset in 8-byte units.
    #[inline]
    pub fn frag_offset(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::FLAGS_FRAG) & 0x1fff
    }

    #[inline]
    pub fn ttl(&self) -> u8 {
        self.buffer.as_ref()[field::TTL]
    }

    #[inline]
    pub fn protocol(&self) -> u8 {
        self.buffer.as_ref()[field::PROTOCOL]
    }

    #[inline]
    pub fn checksum(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::CHECKSUM)
    }

    #[inline]
    pub fn src(&self) -> Ipv4Addr {
        Ipv4Addr::from(get_u32(self.buffer.as_ref(), field::SRC))
    }

    #[inline]
    pub fn dst(&self) -> Ipv4Addr {
        Ipv4Addr::from(get_u32(self.buffer.as_ref(), field::DST))
    }

    #[inline]
    pub fn src_u32(&self) -> u32 {
        get_u32(self.buffer.as_ref(), field::SRC)
    }

    #[inline]
    pub fn dst_u32(&self) -> u32 {
        get_u32(self.buffer.as_ref(), field::DST)
    }

    /// Whether the header checksum verifies.
    #[inline]
    pub fn verify_checksum(&self) -> bool {
        let h = &self.buffer.as_ref()[..self.header_len()];
        // Nearly every header has no options: the unrolled sum.
        match <&[u8; MIN_HEADER_LEN]>::try_from(h) {
            Ok(h20) => checksum::header20_verifies(h20),
            Err(_) => checksum::finish(checksum::sum(h)) == 0,
        }
    }

    /// The bytes after the header, up to the total length.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..self.total_len()]
    }

    /// The header bytes (with options).
    #[inline]
    pub fn header(&self) -> &[u8] {
        &self.buffer.as_ref()[..self.header_len()]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv4Packet<T> {
    /// The whole buffer, for rewrites the typed setters do not cover (a
    /// quoted packet inside an ICMP error).
    #[inline]
    pub fn as_mut_bytes(&mut self) -> &mut [u8] {
        self.buffer.as_mut()
    }

    /// Writes version 4 and the header length in bytes (multiple of 4).
    #[inline]
    pub fn set_version_and_header_len(&mut self, len: usize) {
        self.buffer.as_mut()[field::VER_IHL] = 0x40 | ((len / 4) as u8 & 0x0f);
    }

    #[inline]
    pub fn set_tos(&mut self, v: u8) {
        self.buffer.as_mut()[field::TOS] = v;
    }

    #[inline]
    pub fn set_total_len(&mut self, v: u16) {
        set_u16(self.buffer.as_mut(), field::TOTAL_LEN, v);
    }

    #[inline]
    pub fn set_ident(&mut self, v: u16) {
        set_u16(self.buffer.as_mut(), field::IDENT, v);
    }

    /// Don't-fragment flag, no fragment offset.
    #[inline]
    pub fn set_dont_fragment(&mut self) {
        set_u16(self.buffer.as_mut(), field::FLAGS_FRAG, 0x4000);
    }

    #[inline]
    pub fn set_flags_frag_raw(&mut self, v: u16) {
        set_u16(self.buffer.as_mut(), field::FLAGS_FRAG, v);
    }

    #[inline]
    pub fn set_ttl(&mut self, v: u8) {
        self.buffer.as_mut()[field::TTL] = v;
    }

    #[inline]
    pub fn set_protocol(&mut self, v: u8) {
        self.buffer.as_mut()[field::PROTOCOL] = v;
    }

    #[inline]
    pub fn set_checksum(&mut self, v: u16) {
        set_u16(self.buffer.as_mut(), field::CHECKSUM, v);
    }

    #[inline]
    pub fn set_src(&mut self, a: Ipv4Addr) {
        set_u32(self.buffer.as_mut(), field::SRC, a.into());
    }

    #[inline]
    pub fn set_dst(&mut self, a: Ipv4Addr) {
        set_u32(self.buffer.as_mut(), field::DST, a.into());
    }

    /// Recomputes the header checksum from scratch.
    #[inline]
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let c = checksum::checksum(&self.buffer.as_ref()[..self.header_len()]);
        self.set_checksum(c);
    }

    /// Decrements TTL and patches the checksum incrementally (RFC 1624,
    /// [`checksum::after_ttl_decrement`]). The caller checks `ttl() > 1`
    /// first.
    #[inline(always)]
    pub fn decrement_ttl(&mut self) {
        let b = self.buffer.as_mut();
        b[field::TTL] = b[field::TTL].wrapping_sub(1);
        let c = checksum::after_ttl_decrement(get_u16(b, field::CHECKSUM));
        set_u16(b, field::CHECKSUM, c);
    }

    /// Rewrites the source address, patching the header checksum; returns the
    /// old address (transport checksums are the caller's).
    #[inline(always)]
    pub fn rewrite_src(&mut self, new: u32) -> u32 {
        let b = self.buffer.as_mut();
        let old = get_u32(b, field::SRC);
        set_u32(b, field::SRC, new);
        let c = checksum::update32(get_u16(b, field::CHECKSUM), old, new);
        set_u16(b, field::CHECKSUM, c);
        old
    }

    /// Rewrites the destination address, patching the header checksum.
    #[inline(always)]
    pub fn rewrite_dst(&mut self, new: u32) -> u32 {
        let b = self.buffer.as_mut();
        let old = get_u32(b, field::DST);
        set_u32(b, field::DST, new);
        let c = checksum::update32(get_u16(b, field::CHECKSUM), old, new);
        set_u16(b, field::CHECKSUM, c);
        old
    }

    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let (h, t) = (self.header_len(), self.total_len());
        &mut self.buffer.as_mut()[h..t]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 10.10.1.2 -> 10.10.2.2, ICMP, TTL 64, ident 0x1c46, DF (from scapy).
    const PKT: [u8; 28] = [
        0x45, 0x00, 0x00, 0x1c, 0x1c, 0x46, 0x40, 0x00, 0x40, 0x01, 0x00, 0x00, 10, 10, 1, 2, 10, 10, 2, 2, 8, 0, 0xf7,
        0xff, 0, 0, 0, 0,
    ];

    fn pkt() -> Vec<u8> {
        let mut b = PKT.to_vec();
        Ipv4Packet::new_unchecked(&mut b[..]).fill_checksum();
        b
    }

    #[test]
    fn valid_header_parses_and_checksum_verifies() {
        let b = pkt();
        let p = Ipv4Packet::new_checked(&b[..]).unwrap();
        assert_eq!(p.header_len(), 20);
        assert_eq!(p.total_len(), 28);
        assert_eq!(p.src(), Ipv4Addr::new(10, 10, 1, 2));
        assert_eq!(p.dst(), Ipv4Addr::new(10, 10, 2, 2));
        assert_eq!(p.protocol(), IpProtocol::ICMP);
        assert!(p.verify_checksum());
        assert!(!p.is_fragment());
    }

    #[test]
    fn ihl_below_five_is_malformed() {
        let mut b = pkt();
        b[0] = 0x44;
        assert_eq!(Ipv4Packet::new_checked(&b[..]).unwrap_err(), WireError::Malformed);
    }

    #[test]
    fn version_six_is_malformed() {
        let mut b = pkt();
        b[0] = 0x65;
        assert_eq!(Ipv4Packet::new_checked(&b[..]).unwrap_err(), WireError::Malformed);
    }

    #[test]
    fn total_length_beyond_buffer_is_truncated() {
        let b = pkt();
        assert_eq!(Ipv4Packet::new_checked(&b[..27]).unwrap_err(), WireError::Truncated);
    }

    #[test]
    fn total_length_below_header_is_malformed() {
        let mut b = pkt();
        b[3] = 19;
        assert_eq!(Ipv4Packet::new_checked(&b[..]).unwrap_err(), WireError::Malformed);
    }

    #[test]
    fn ttl_decrement_keeps_the_checksum_valid() {
        let mut b = pkt();
        let mut p = Ipv4Packet::new_checked(&mut b[..]).unwrap();
        for expect in (1..64).rev() {
            p.decrement_ttl();
            assert_eq!(p.ttl(), expect);
            assert!(p.verify_checksum(), "ttl {expect}");
        }
    }

    #[test]
    fn address_rewrite_keeps_the_checksum_valid() {
        let mut b = pkt();
        let mut p = Ipv4Packet::new_checked(&mut b[..]).unwrap();
        let old = p.rewrite_src(u32::from(Ipv4Addr::new(10, 10, 2, 1)));
        assert_eq!(old, u32::from(Ipv4Addr::new(10, 10, 1, 2)));
        p.rewrite_dst(u32::from(Ipv4Addr::new(192, 0, 2, 77)));
        assert!(p.verify_checksum());
        assert_eq!(p.src(), Ipv4Addr::new(10, 10, 2, 1));
    }
}
