//! The heartbeat: one UDP datagram per `heartbeat_ms` to every peer,
//! authenticated with HMAC-SHA256 (truncated to 128 bits) under the
//! cluster's pre-shared key, so nobody on the management network can forge a
//! role change. A per-sender (boot id, sequence) pair that must grow defeats
//! replays.
//!
//! ```text
//!  0      4    5    6    7     8          12         16   17     20
//! +------+----+----+----+-----+----------+----------+----+------+
//! |"LSHB"|ver |type|role|flags| node_id  |  epoch   |prio| rsvd |
//! +------+----+----+----+-----+----------+----------+----+------+
//! | boot_id (8)            | seq (8)              | switchover_to (4) | rsvd (4) |
//! +-----------------------------------------------+-------------------+----------+
//! | HMAC-SHA256(key, bytes 0..48)[..16]                                           |
//! +--------------------------------------------------------------------------------+
//! ```

use hmac::{Hmac, Mac};
use sha2::Sha256;

pub const MAGIC: [u8; 4] = *b"LSHB";
pub const VERSION: u8 = 1;
pub const TYPE_HEARTBEAT: u8 = 1;
pub const BODY_LEN: usize = 48;
pub const MAC_LEN: usize = 16;
pub const LEN: usize = BODY_LEN + MAC_LEN;

mod field {
    pub const MAGIC: usize = 0;
    pub const VERSION: usize = 4;
    pub const TYPE: usize = 5;
    pub const ROLE: usize = 6;
    pub const FLAGS: usize = 7;
    pub const NODE_ID: usize = 8;
    pub const EPOCH: usize = 12;
    pub const PRIORITY: usize = 16;
    pub const BOOT_ID: usize = 20;
    pub const SEQ: usize = 28;
    pub const SWITCHOVER_TO: usize = 36;
}

const FLAG_SYNCED: u8 = 1;

/// The role a node announces.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WireRole {
    Listening = 0,
    Primary = 1,
    Backup = 2,
}

impl WireRole {
    fn from_u8(v: u8) -> Option<WireRole> {
        match v {
            0 => Some(WireRole::Listening),
            1 => Some(WireRole::Primary),
            2 => Some(WireRole::Backup),
            _ => None,
        }
    }
}

/// A decoded heartbeat.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Heartbeat {
    pub node_id: u32,
    pub role: WireRole,
    pub epoch: u32,
    pub priority: u8,
    /// Backup: eligible to take over (processed every shard's stream without
    /// a gap). Primary: always true.
    pub synced: bool,
    /// Changes when the sender restarts (its start time); with `seq`, orders
    /// every heartbeat a node ever sends.
    pub boot_id: u64,
    pub seq: u64,
    /// A primary handing over (planned switchover): the chosen backup's id.
    pub switchover_to: u32,
}

/// Why a datagram was rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeartbeatError {
    Truncated,
    BadMagic,
    BadVersion,
    Malformed,
    BadMac,
}

impl std::fmt::Display for HeartbeatError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            HeartbeatError::Truncated => "truncated",
            HeartbeatError::BadMagic => "bad magic",
            HeartbeatError::BadVersion => "unsupported version",
            HeartbeatError::Malformed => "malformed",
            HeartbeatError::BadMac => "authentication failed",
        })
    }
}

impl std::error::Error for HeartbeatError {}

fn mac(key: &[u8], body: &[u8]) -> [u8; MAC_LEN] {
    // HMAC accepts keys of any length; new_from_slice cannot fail for it.
    let mut m = match <Hmac<Sha256> as Mac>::new_from_slice(key) {
        Ok(m) => m,
        Err(_) => return [0; MAC_LEN],
    };
    m.update(body);
    let full = m.finalize().into_bytes();
    let mut out = [0u8; MAC_LEN];
    out.copy_from_slice(&full[..MAC_LEN]);
    out
}

impl Heartbeat {
    /// Encodes and signs.
    pub fn encode(&self, key: &[u8]) -> [u8; LEN] {
        let mut b = [0u8; LEN];
        b[field::MAGIC..field::MAGIC + 4].copy_from_slice(&MAGIC);
        b[field::VERSION] = VERSION;
        b[field::TYPE] = TYPE_HEARTBEAT;
        b[field::ROLE] = self.role as u8;
        b[field::FLAGS] = if self.synced { FLAG_SYNCED } else { 0 };
        b[field::NODE_ID..field::NODE_ID + 4].copy_from_slice(&self.node_id.to_be_bytes());
        b[field::EPOCH..field::EPOCH + 4].copy_from_slice(&self.epoch.to_be_bytes());
        b[field::PRIORITY] = self.priority;
        b[field::BOOT_ID..field::BOOT_ID + 8].copy_from_slice(&self.boot_id.to_be_bytes());
        b[field::SEQ..field::SEQ + 8].copy_from_slice(&self.seq.to_be_bytes());
        b[field::SWITCHOVER_TO..field::SWITCHOVER_TO + 4].copy_from_slice(&self.switchover_to.to_be_bytes());
        let m = mac(key, &b[..BODY_LEN]);
        b[BODY_LEN..].copy_from_slice(&m);
        b
    }

    /// Verifies and decodes a datagram.
    pub fn decode(b: &[u8], key: &[u8]) -> Result<Heartbeat, HeartbeatError> {
        if b.len() < LEN {
            return Err(HeartbeatError::Truncated);
        }
        if b[field::MAGIC..field::MAGIC + 4] != MAGIC {
            return Err(HeartbeatError::BadMagic);
        }
        if b[field::VERSION] != VERSION {
            return Err(HeartbeatError::BadVersion);
        }
        let expect = mac(key, &b[..BODY_LEN]);
        // Constant-time comparison: no early exit on the first differing byte.
        let diff = expect.iter().zip(&b[BODY_LEN..LEN]).fold(0u8, |d, (x, y)| d | (x ^ y));
        if diff != 0 {
            return Err(HeartbeatError::BadMac);
        }
        if b[field::TYPE] != TYPE_HEARTBEAT {
            return Err(HeartbeatError::Malformed);
        }
        let role = WireRole::from_u8(b[field::ROLE]).ok_or(HeartbeatError::Malformed)?;
        let u32_at = |at: usize| u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
        let u64_at = |at: usize| {
            let mut x = [0u8; 8];
            x.copy_from_slice(&b[at..at + 8]);
            u64::from_be_bytes(x)
        };
        Ok(Heartbeat {
            node_id: u32_at(field::NODE_ID),
            role,
            epoch: u32_at(field::EPOCH),
            priority: b[field::PRIORITY],
            synced: b[field::FLAGS] & FLAG_SYNCED != 0,
            boot_id: u64_at(field::BOOT_ID),
            seq: u64_at(field::SEQ),
            switchover_to: u32_at(field::SWITCHOVER_TO),
        })
    }
}

/// Parses a key given as hex (at least 16 bytes).
pub fn parse_key(hex: &str) -> Option<Vec<u8>> {
    let hex = hex.trim();
    if hex.len() < 32 || !hex.len().is_multiple_of(2) {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn hb() -> Heartbeat {
        Heartbeat {
            node_id: 2,
            role: WireRole::Backup,
            epoch: 7,
            priority: 150,
            synced: true,
            boot_id: 1_700_000_000_000_000_000,
            seq: 42,
            switchover_to: 0,
        }
    }

    #[test]
    fn encoded_heartbeat_decodes_back() {
        let b = hb().encode(KEY);
        assert_eq!(b.len(), 64);
        assert_eq!(Heartbeat::decode(&b, KEY), Ok(hb()));
    }

    #[test]
    fn any_flipped_bit_fails_authentication() {
        let b = hb().encode(KEY);
        for i in 6..LEN {
            let mut c = b;
            c[i] ^= 0x10;
            assert_eq!(Heartbeat::decode(&c, KEY), Err(HeartbeatError::BadMac), "byte {i}");
        }
    }

    #[test]
    fn another_key_fails_authentication() {
        let b = hb().encode(KEY);
        assert_eq!(
            Heartbeat::decode(&b, b"another key, same length, really"),
            Err(HeartbeatError::BadMac)
        );
    }

    #[test]
    fn short_or_foreign_datagrams_are_rejected_by_kind() {
        let b = hb().encode(KEY);
        assert_eq!(Heartbeat::decode(&b[..63], KEY), Err(HeartbeatError::Truncated));
        let mut c = b;
        c[0] = b'X';
        assert_eq!(Heartbeat::decode(&c, KEY), Err(HeartbeatError::BadMagic));
        let mut c = b;
        c[4] = 9;
        assert_eq!(Heartbeat::decode(&c, KEY), Err(HeartbeatError::BadVersion));
    }

    #[test]
    fn hex_keys_parse_and_short_ones_do_not() {
        assert_eq!(parse_key("00112233445566778899aabbccddeeff").map(|k| k.len()), Some(16));
        assert_eq!(parse_key("0011"), None);
        assert_eq!(parse_key("zz112233445566778899aabbccddeeff"), None);
    }
}
