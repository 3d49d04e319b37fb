//! UDP (RFC 768).

use super::checksum;
use super::{get_u16, set_u16, Result, WireError};

mod field {
    pub const SRC_PORT: usize = 0;
    pub const DST_PORT: usize = 2;
    pub const LENGTH: usize = 4;
    pub const CHECKSUM: usize = 6;
}

pub const HEADER_LEN: usize = 8;

/// A UDP datagram view. `new_checked` guarantees 8 <= length <= buffer.
#[derive(Debug)]
pub struct UdpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> UdpPacket<T> {
    #[inline]
    pub fn new_unchecked(buffer: T) -> Self {
        UdpPacket { buffer }
    }

    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self> {
        let b = buffer.as_ref();
        if b.len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        let len = get_u16(b, field::LENGTH) as usize;
        if len < HEADER_LEN {
            return Err(WireError::Malformed);
        }
        if len > b.len() {
            return Err(WireError::Truncated);
        }
        Ok(UdpPacket { buffer })
    }

    #[inline]
    pub fn src_port(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::SRC_PORT)
    }

    #[inline]
    pub fn dst_port(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::DST_PORT)
    }

    #[inline]
    pub fn len(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::LENGTH)
    }

    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len() as usize == HEADER_LEN
    }

    #[inline]
    pub fn checksum(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::CHECKSUM)
    }

    /// Verifies the checksum against the pseudo-header (0 = not computed).
    #[inline]
    pub fn verify_checksum(&self, src: [u8; 4], dst: [u8; 4]) -> bool {
        if self.checksum() == 0 {
            return true;
        }
        let len = self.len();
        let s = checksum::pseudo_header_sum(src, dst, super::IpProtocol::UDP, len)
            + checksum::sum(&self.buffer.as_ref()[..len as usize]);
        checksum::finish(s) == 0
    }

    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..self.len() as usize]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> UdpPacket<T> {
    #[inline]
    pub fn set_src_port(&mut self, p: u16) {
        set_u16(self.buffer.as_mut(), field::SRC_PORT, p);
    }

    #[inline]
    pub fn set_dst_port(&mut self, p: u16) {
        set_u16(self.buffer.as_mut(), field::DST_PORT, p);
    }

    #[inline]
    pub fn set_len(&mut self, l: u16) {
        set_u16(self.buffer.as_mut(), field::LENGTH, l);
    }

    #[inline]
    pub fn set_checksum(&mut self, c: u16) {
        set_u16(self.buffer.as_mut(), field::CHECKSUM, c);
    }

    /// Computes the checksum with the pseudo-header (0 is sent as 0xffff).
    #[inline]
    pub fn fill_checksum(&mut self, src: [u8; 4], dst: [u8; 4]) {
        self.set_checksum(0);
        let len = self.len();
        let s = checksum::pseudo_header_sum(src, dst, super::IpProtocol::UDP, len)
            + checksum::sum(&self.buffer.as_ref()[..len as usize]);
        let c = checksum::finish(s);
        self.set_checksum(if c == 0 { 0xffff } else { c });
    }

    /// Patches the checksum for changed words of the pseudo-header or
    /// datagram. A zero checksum (none) stays zero, as RFC 768 asks.
    #[inline]
    pub fn patch_checksum(&mut self, delta: checksum::Delta) {
        let c = self.checksum();
        if c == 0 {
            return;
        }
        let n = delta.apply(c);
        self.set_checksum(if n == 0 { 0xffff } else { n });
    }

    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let l = self.len() as usize;
        &mut self.buffer.as_mut()[HEADER_LEN..l]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SRC: [u8; 4] = [10, 10, 1, 2];
    const DST: [u8; 4] = [10, 10, 2, 2];

    fn dgram() -> Vec<u8> {
        let mut b = vec![0x30, 0x39, 0x00, 0x35, 0x00, 0x0c, 0, 0, b'a', b'b', b'c', b'd'];
        UdpPacket::new_unchecked(&mut b[..]).fill_checksum(SRC, DST);
        b
    }

    #[test]
    fn filled_checksum_verifies_and_fields_read_back() {
        let b = dgram();
        let p = UdpPacket::new_checked(&b[..]).unwrap();
        assert_eq!((p.src_port(), p.dst_port(), p.len()), (12345, 53, 12));
        assert_eq!(p.payload(), b"abcd");
        assert!(p.verify_checksum(SRC, DST));
        assert!(!p.verify_checksum(SRC, [10, 10, 2, 3]));
    }

    #[test]
    fn port_and_address_patches_keep_the_checksum_valid() {
        let mut b = dgram();
        let mut p = UdpPacket::new_checked(&mut b[..]).unwrap();
        p.set_src_port(40000);
        let new_src = [10, 10, 2, 1];
        p.patch_checksum(
            checksum::Delta::default()
                .word(12345, 40000)
                .dword(u32::from_be_bytes(SRC), u32::from_be_bytes(new_src)),
        );
        assert!(p.verify_checksum(new_src, DST));
    }

    #[test]
    fn length_field_below_eight_is_malformed_and_beyond_buffer_truncated() {
        let mut b = dgram();
        b[5] = 7;
        assert_eq!(UdpPacket::new_checked(&b[..]).unwrap_err(), WireError::Malformed);
        b[5] = 13;
        assert_eq!(UdpPacket::new_checked(&b[..]).unwrap_err(), WireError::Truncated);
    }
}
