//! The fuzz entry point of the control plane's one wire parser, the
//! heartbeat, shared by `fuzz/` (cargo fuzz) and a corpus test here that
//! runs in CI.

use crate::heartbeat::{Heartbeat, HeartbeatError, WireRole, LEN};

/// The key the fuzzed heartbeats are signed with.
pub const KEY: &[u8] = b"lockstep-fuzz-key-0001";

/// Arbitrary bytes through the heartbeat decoder. The first byte picks
/// what: even, the bytes as a datagram (never a panic; arbitrary bytes are
/// never authentic); odd, a heartbeat made from the next bytes and signed
/// with [`KEY`], which must decode back to itself, then changed as the
/// bytes after it say (a byte xored, or the datagram cut), which must be
/// refused — the MAC covers every byte before it, and itself.
pub fn heartbeat(data: &[u8]) {
    let Some((mode, rest)) = data.split_first() else {
        assert_eq!(Heartbeat::decode(data, KEY), Err(HeartbeatError::Truncated));
        return;
    };
    if mode & 1 == 0 {
        if let Ok(hb) = Heartbeat::decode(rest, KEY) {
            // Only a datagram this key signed: its fields sign the same.
            assert_eq!(hb.encode(KEY)[..], rest[..LEN]);
        }
        return;
    }
    let mut b = Bytes(rest);
    let hb = Heartbeat {
        node_id: b.u32(),
        role: [WireRole::Listening, WireRole::Primary, WireRole::Backup][b.u8() as usize % 3],
        epoch: b.u32(),
        priority: b.u8(),
        synced: b.u8() & 1 == 1,
        boot_id: b.u64(),
        seq: b.u64(),
        switchover_to: b.u32(),
    };
    let signed = hb.encode(KEY);
    assert_eq!(
        Heartbeat::decode(&signed, KEY),
        Ok(hb),
        "a signed heartbeat decodes back"
    );
    let (at, xor) = (b.u8() as usize % (LEN + 1), b.u8());
    let mut tampered = signed.to_vec();
    if at == LEN {
        // Cut: any datagram shorter than a heartbeat is refused as such.
        tampered.truncate(xor as usize % LEN);
        assert_eq!(Heartbeat::decode(&tampered, KEY), Err(HeartbeatError::Truncated));
    } else if xor != 0 {
        tampered[at] ^= xor;
        let got = Heartbeat::decode(&tampered, KEY);
        assert!(got.is_err(), "byte {at} ^ {xor:#04x} accepted: {got:?}");
    }
}

/// Reads fields from the fuzzer's bytes, zeros once they run out.
struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn take<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        let n = N.min(self.0.len());
        out[..n].copy_from_slice(&self.0[..n]);
        self.0 = &self.0[n..];
        out
    }

    fn u8(&mut self) -> u8 {
        self.take::<1>()[0]
    }

    fn u32(&mut self) -> u32 {
        u32::from_be_bytes(self.take())
    }

    fn u64(&mut self) -> u64 {
        u64::from_be_bytes(self.take())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fixed sequence of inputs (xorshift64*), the same in every run.
    fn corpus(n: usize) -> impl Iterator<Item = Vec<u8>> {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            x.wrapping_mul(0x2545_f491_4f6c_dd1d)
        };
        (0..n).map(move |i| {
            let len = (next() % 100) as usize;
            let mut v: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            if i % 4 == 0 && v.len() > 4 {
                // A quarter start like a heartbeat, to get past the magic.
                v[1..5].copy_from_slice(b"LSHB");
            }
            v
        })
    }

    #[test]
    fn heartbeats_from_arbitrary_bytes_decode_back_and_refuse_every_change() {
        for input in corpus(20_000) {
            heartbeat(&input);
        }
    }

    #[test]
    fn every_single_byte_change_of_a_signed_heartbeat_is_refused() {
        // Odd mode, all 31 bytes of fields 0x5a, then each position xored with 0x01.
        for at in 0..=LEN as u8 {
            let mut input = vec![1u8];
            input.extend([0x5a; 31]);
            input.extend([at, 0x01]);
            heartbeat(&input);
        }
    }
}
