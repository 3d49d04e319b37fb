//! TCP headers (RFC 9293): the fields a router and a NAT touch.

use super::checksum;
use super::{get_u16, get_u32, set_u16, Result, WireError};

mod field {
    pub const SRC_PORT: usize = 0;
    pub const DST_PORT: usize = 2;
    pub const SEQ: usize = 4;
    pub const ACK: usize = 8;
    pub const DATA_OFF: usize = 12;
    pub const FLAGS: usize = 13;
    pub const WINDOW: usize = 14;
    pub const CHECKSUM: usize = 16;
}

pub const MIN_HEADER_LEN: usize = 20;
/// How many bytes of a header hold everything up to the checksum (a quote
/// inside an ICMP error may stop earlier).
pub const CHECKSUM_END: usize = field::CHECKSUM + 2;

/// TCP flag bits.
pub struct TcpFlags;

impl TcpFlags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
}

/// A TCP segment view. `new_checked` guarantees 20 <= data offset <= buffer.
#[derive(Debug)]
pub struct TcpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> TcpPacket<T> {
    #[inline]
    pub fn new_unchecked(buffer: T) -> Self {
        TcpPacket { buffer }
    }

    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self> {
        let b = buffer.as_ref();
        if b.len() < MIN_HEADER_LEN {
            return Err(WireError::Truncated);
        }
        let off = ((b[field::DATA_OFF] >> 4) as usize) * 4;
        if off < MIN_HEADER_LEN {
            return Err(WireError::Malformed);
        }
        if off > b.len() {
            return Err(WireError::Truncated);
        }
        Ok(TcpPacket { buffer })
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
    pub fn seq(&self) -> u32 {
        get_u32(self.buffer.as_ref(), field::SEQ)
    }

    #[inline]
    pub fn ack(&self) -> u32 {
        get_u32(self.buffer.as_ref(), field::ACK)
    }

    #[inline]
    pub fn header_len(&self) -> usize {
        ((self.buffer.as_ref()[field::DATA_OFF] >> 4) as usize) * 4
    }

    #[inline]
    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[field::FLAGS]
    }

    #[inline]
    pub fn window(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::WINDOW)
    }

    #[inline]
    pub fn checksum(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::CHECKSUM)
    }

    /// Verifies the checksum over the whole segment (the buffer is the
    /// segment: IP payload) and the pseudo-header.
    #[inline]
    pub fn verify_checksum(&self, src: [u8; 4], dst: [u8; 4]) -> bool {
        let b = self.buffer.as_ref();
        let s = checksum::pseudo_header_sum(src, dst, super::IpProtocol::TCP, b.len() as u16) + checksum::sum(b);
        checksum::finish(s) == 0
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> TcpPacket<T> {
    #[inline]
    pub fn set_src_port(&mut self, p: u16) {
        set_u16(self.buffer.as_mut(), field::SRC_PORT, p);
    }

    #[inline]
    pub fn set_dst_port(&mut self, p: u16) {
        set_u16(self.buffer.as_mut(), field::DST_PORT, p);
    }

    #[inline]
    pub fn set_checksum(&mut self, c: u16) {
        set_u16(self.buffer.as_mut(), field::CHECKSUM, c);
    }

    /// Computes the checksum over the whole buffer (the segment).
    #[inline]
    pub fn fill_checksum(&mut self, src: [u8; 4], dst: [u8; 4]) {
        self.set_checksum(0);
        let b = self.buffer.as_ref();
        let s = checksum::pseudo_header_sum(src, dst, super::IpProtocol::TCP, b.len() as u16) + checksum::sum(b);
        self.set_checksum(checksum::finish(s));
    }

    /// Patches the checksum for changed words of the pseudo-header or
    /// segment.
    #[inline]
    pub fn patch_checksum(&mut self, delta: checksum::Delta) {
        let c = delta.apply(self.checksum());
        self.set_checksum(c);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SRC: [u8; 4] = [10, 10, 1, 2];
    const DST: [u8; 4] = [10, 10, 2, 2];

    fn syn() -> Vec<u8> {
        let mut b = vec![0u8; 24];
        b[0..2].copy_from_slice(&40000u16.to_be_bytes());
        b[2..4].copy_from_slice(&5201u16.to_be_bytes());
        b[4..8].copy_from_slice(&1000u32.to_be_bytes());
        b[12] = 6 << 4; // 24-byte header: one MSS option
        b[13] = TcpFlags::SYN;
        b[14..16].copy_from_slice(&64240u16.to_be_bytes());
        b[20..24].copy_from_slice(&[2, 4, 0x05, 0xb4]);
        TcpPacket::new_unchecked(&mut b[..]).fill_checksum(SRC, DST);
        b
    }

    #[test]
    fn syn_fields_read_back_and_checksum_verifies() {
        let b = syn();
        let p = TcpPacket::new_checked(&b[..]).unwrap();
        assert_eq!((p.src_port(), p.dst_port(), p.seq()), (40000, 5201, 1000));
        assert_eq!(p.flags(), TcpFlags::SYN);
        assert_eq!(p.header_len(), 24);
        assert!(p.verify_checksum(SRC, DST));
    }

    #[test]
    fn nat_rewrite_by_patches_keeps_the_checksum_valid() {
        let mut b = syn();
        let mut p = TcpPacket::new_checked(&mut b[..]).unwrap();
        p.set_src_port(1024);
        let new_src = [10, 10, 2, 1];
        p.patch_checksum(
            checksum::Delta::default()
                .word(40000, 1024)
                .dword(u32::from_be_bytes(SRC), u32::from_be_bytes(new_src)),
        );
        assert!(p.verify_checksum(new_src, DST));
    }

    #[test]
    fn data_offset_beyond_buffer_is_truncated() {
        let mut b = syn();
        b[12] = 15 << 4;
        assert_eq!(TcpPacket::new_checked(&b[..]).unwrap_err(), WireError::Truncated);
        b[12] = 4 << 4;
        assert_eq!(TcpPacket::new_checked(&b[..]).unwrap_err(), WireError::Malformed);
    }
}
