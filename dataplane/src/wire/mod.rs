//! Zero-copy typed views over packet bytes, in the style of smoltcp's `wire`
//! module: each header is a wrapper over a byte buffer with its field ranges
//! as named constants, `new_checked` validates once, accessors never panic
//! afterwards.

pub mod arp;
pub mod checksum;
pub mod ethernet;
pub mod icmp;
pub mod ipv4;
pub mod replication;
pub mod tcp;
pub mod udp;

pub use arp::ArpPacket;
pub use ethernet::{EtherType, EthernetFrame, MacAddr};
pub use icmp::IcmpPacket;
pub use ipv4::{IpProtocol, Ipv4Addr, Ipv4Packet};
pub use tcp::TcpPacket;
pub use udp::UdpPacket;

use std::fmt;

/// Why a buffer is not a valid header of the kind asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WireError {
    /// Shorter than the header (or than its own length field says).
    Truncated,
    /// A field holds a value the format does not allow.
    Malformed,
    /// The header checksum does not verify.
    BadChecksum,
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            WireError::Truncated => "truncated",
            WireError::Malformed => "malformed",
            WireError::BadChecksum => "bad checksum",
        })
    }
}

impl std::error::Error for WireError {}

pub type Result<T> = core::result::Result<T, WireError>;

#[inline(always)]
pub(crate) fn get_u16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

#[inline(always)]
pub(crate) fn set_u16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

#[inline(always)]
pub(crate) fn get_u32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

#[inline(always)]
pub(crate) fn set_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_be_bytes());
}

#[inline(always)]
pub(crate) fn get_u64(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_be_bytes(x)
}

#[inline(always)]
pub(crate) fn set_u64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_be_bytes());
}
