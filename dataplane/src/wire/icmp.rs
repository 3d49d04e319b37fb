//! ICMPv4 (RFC 792): echo, destination unreachable, time exceeded.

use super::checksum;
use super::{get_u16, set_u16, Result, WireError};

mod field {
    pub const TYPE: usize = 0;
    pub const CODE: usize = 1;
    pub const CHECKSUM: usize = 2;
    pub const IDENT: usize = 4;
    pub const SEQ: usize = 6;
    pub const UNUSED: usize = 4;
}

pub const HEADER_LEN: usize = 8;

/// ICMP message types.
pub struct IcmpType;

impl IcmpType {
    pub const ECHO_REPLY: u8 = 0;
    pub const DEST_UNREACHABLE: u8 = 3;
    pub const ECHO_REQUEST: u8 = 8;
    pub const TIME_EXCEEDED: u8 = 11;
}

/// An ICMP message view.
#[derive(Debug)]
pub struct IcmpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> IcmpPacket<T> {
    #[inline]
    pub fn new_unchecked(buffer: T) -> Self {
        IcmpPacket { buffer }
    }

    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self> {
        if buffer.as_ref().len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        Ok(IcmpPacket { buffer })
    }

    #[inline]
    pub fn msg_type(&self) -> u8 {
        self.buffer.as_ref()[field::TYPE]
    }

    #[inline]
    pub fn code(&self) -> u8 {
        self.buffer.as_ref()[field::CODE]
    }

    #[inline]
    pub fn checksum(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::CHECKSUM)
    }

    /// Echo identifier (the NAT's "port" for ICMP echo).
    #[inline]
    pub fn echo_ident(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::IDENT)
    }

    #[inline]
    pub fn echo_seq(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::SEQ)
    }

    /// Whether the checksum over the whole message verifies.
    #[inline]
    pub fn verify_checksum(&self) -> bool {
        checksum::checksum(self.buffer.as_ref()) == 0
    }

    #[inline]
    pub fn is_echo(&self) -> bool {
        matches!(self.msg_type(), IcmpType::ECHO_REQUEST | IcmpType::ECHO_REPLY)
    }

    /// Whether the message quotes an offending datagram (errors).
    #[inline]
    pub fn is_error(&self) -> bool {
        matches!(
            self.msg_type(),
            IcmpType::DEST_UNREACHABLE | IcmpType::TIME_EXCEEDED | 4 | 5 | 12
        )
    }

    /// Bytes after the 8-byte header (for errors: the quoted datagram).
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> IcmpPacket<T> {
    #[inline]
    pub fn set_msg_type(&mut self, t: u8) {
        self.buffer.as_mut()[field::TYPE] = t;
    }

    #[inline]
    pub fn set_code(&mut self, c: u8) {
        self.buffer.as_mut()[field::CODE] = c;
    }

    #[inline]
    pub fn set_checksum(&mut self, v: u16) {
        set_u16(self.buffer.as_mut(), field::CHECKSUM, v);
    }

    #[inline]
    pub fn set_unused(&mut self) {
        self.buffer.as_mut()[field::UNUSED..field::UNUSED + 4].fill(0);
    }

    /// Rewrites the echo identifier, patching the checksum incrementally.
    #[inline]
    pub fn rewrite_echo_ident(&mut self, new: u16) -> u16 {
        let b = self.buffer.as_mut();
        let old = get_u16(b, field::IDENT);
        set_u16(b, field::IDENT, new);
        let c = checksum::update16(get_u16(b, field::CHECKSUM), old, new);
        set_u16(b, field::CHECKSUM, c);
        old
    }

    /// Recomputes the checksum over the whole buffer.
    #[inline]
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let c = checksum::checksum(self.buffer.as_ref());
        self.set_checksum(c);
    }

    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[HEADER_LEN..]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_ident_rewrite_keeps_the_checksum_valid() {
        let mut b = [8u8, 0, 0, 0, 0x12, 0x34, 0, 1, b'h', b'i'];
        let mut p = IcmpPacket::new_checked(&mut b[..]).unwrap();
        p.fill_checksum();
        assert!(p.verify_checksum());
        assert_eq!(p.rewrite_echo_ident(0xbeef), 0x1234);
        assert!(p.verify_checksum());
        assert_eq!(p.echo_ident(), 0xbeef);
        assert_eq!(p.echo_seq(), 1);
    }

    #[test]
    fn seven_bytes_are_truncated() {
        assert_eq!(
            IcmpPacket::new_checked(&[0u8; 7][..]).unwrap_err(),
            WireError::Truncated
        );
    }
}
