//! The session context a function exposes to the checkpoint protocol
//! (DESIGN.md §5): snapshot a shard in chunks, install a chunk, list what
//! changed since a point, digest a slice for the in-band sync audit.
//!
//! Encoding (stable, versioned, big-endian):
//!
//! ```text
//! chunk  = magic "LSST" | version u16 | kind u8 | count u32 | record*
//! record = the kind's fixed-size record (see each function)
//! ```
//! A record whose payload is all-zero after its key is a tombstone (the
//! session was deleted) in a delta.
//!
//! Version 2 (this build writes it; it still reads 1): a NAT session
//! record starts with the slab slot the session lies in, and a layout
//! chunk ([`StateKind::NatLayout`]) carries the slab's length, the expiry
//! sweep's place and the free slots in the order they are reused. With
//! both, an installed NAT is the original slot for slot, so it expires
//! sessions at the same packets and hands out the same ports (from version
//! 1 records it held the same sessions but could diverge at the first
//! session that expired).

use std::fmt;

pub const MAGIC: [u8; 4] = *b"LSST";
pub const VERSION: u16 = 2;
/// The oldest version this build installs.
pub const OLDEST_VERSION: u16 = 1;
pub const CHUNK_HEADER: usize = 11;

/// What a chunk carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum StateKind {
    NatSessions = 1,
    Neighbors = 2,
    /// A u32 record each: the slab's length, the sweep's place, then the
    /// free slots, the one reused last first (version 2 only).
    NatLayout = 3,
    /// The router's rate limiters and held packets, whole (version 2
    /// only; `nf::transient`); an empty body: unchanged.
    RouterTransient = 4,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StateError {
    Truncated,
    BadMagic,
    /// A version this build cannot read.
    Version(u16),
    WrongKind(u8),
    /// A record no table could hold (full, or invalid values).
    Rejected,
}

impl fmt::Display for StateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StateError::Truncated => f.write_str("truncated chunk"),
            StateError::BadMagic => f.write_str("not a state chunk"),
            StateError::Version(v) => write!(f, "state version {v} not supported"),
            StateError::WrongKind(k) => write!(f, "chunk of kind {k} for another table"),
            StateError::Rejected => f.write_str("record rejected"),
        }
    }
}

impl std::error::Error for StateError {}

/// A function's flow state, seen by the checkpoint protocol.
pub trait SessionState {
    /// Appends a chunk with up to `max_records` records starting at
    /// `cursor` (0 = start); returns the cursor of the next chunk, or None
    /// when this chunk ends the table.
    fn snapshot_chunk(&self, cursor: usize, max_records: usize, out: &mut Vec<u8>) -> Option<usize>;
    /// Installs a chunk (full or delta); returns how many records it held.
    fn install_chunk(&mut self, chunk: &[u8]) -> Result<usize, StateError>;
    /// A counter that grows with every change to the state.
    fn generation(&self) -> u64;
    /// Appends a delta chunk of what changed after `generation` (records of
    /// live entries, tombstones of deleted ones); returns how many. None,
    /// with nothing appended, when that can no longer be listed whole (a
    /// deletion since then fell out of a bounded log): the caller sends a
    /// full snapshot instead.
    fn changed_since(&self, generation: u64, out: &mut Vec<u8>) -> Option<usize>;
    /// [`SessionState::changed_since`] in chunks of at most `max_records`
    /// records each, in the same order, so that a big delta installs chunk
    /// by chunk as it arrives (one chunk unless a table splits it).
    fn changed_since_chunks(&self, generation: u64, max_records: usize, out: &mut Vec<Vec<u8>>) -> Option<usize> {
        let _ = max_records;
        let mut chunk = Vec::new();
        let n = self.changed_since(generation, &mut chunk)?;
        out.push(chunk);
        Some(n)
    }
    /// A digest of the entries whose key falls in slice `slice` of `of`,
    /// independent of insertion order.
    fn digest(&self, slice: u32, of: u32) -> u64;
    /// Appends a chunk of where the records lie, when what the function
    /// does next depends on it (a NAT's slab: which slots are free and in
    /// what order they are reused, and where the expiry sweep stands);
    /// false, with nothing appended, when it does not. A checkpoint sends
    /// it after the records (a snapshot's or a delta's), taken at the same
    /// sequence point as the last of them.
    fn layout_chunk(&self, _out: &mut Vec<u8>) -> bool {
        false
    }
}

/// Writes a chunk header; returns the offset of its count for later patching.
pub fn begin_chunk(out: &mut Vec<u8>, kind: StateKind) -> usize {
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&VERSION.to_be_bytes());
    out.push(kind as u8);
    let at = out.len();
    out.extend_from_slice(&0u32.to_be_bytes());
    at
}

pub fn set_count(out: &mut [u8], at: usize, n: u32) {
    out[at..at + 4].copy_from_slice(&n.to_be_bytes());
}

/// The kind byte of a chunk, if it has one.
pub fn chunk_kind(chunk: &[u8]) -> Option<u8> {
    chunk.get(6).copied()
}

/// A chunk of `record_len`-byte records cut into chunks of at most
/// `max_records` (at least one: an empty chunk stays one), same header,
/// same order. A chunk whose body is not whole records is kept as it is
/// (its installer refuses it).
pub fn split_records(chunk: &[u8], record_len: usize, max_records: usize, out: &mut Vec<Vec<u8>>) {
    let body = chunk.get(CHUNK_HEADER..).unwrap_or(&[]);
    let max = max_records.max(1);
    if chunk.len() < CHUNK_HEADER || record_len == 0 || body.len() % record_len != 0 || body.len() <= max * record_len {
        out.push(chunk.to_vec());
        return;
    }
    for records in body.chunks(max * record_len) {
        let mut c = Vec::with_capacity(CHUNK_HEADER + records.len());
        c.extend_from_slice(&chunk[..CHUNK_HEADER]);
        set_count(&mut c, CHUNK_HEADER - 4, (records.len() / record_len) as u32);
        c.extend_from_slice(records);
        out.push(c);
    }
}

/// Validates the header of a chunk of `kind` whose records differ in
/// length; returns (version, count, body).
pub fn open_variable_chunk(chunk: &[u8], kind: StateKind, oldest: u16) -> Result<(u16, usize, &[u8]), StateError> {
    let (v, n, _) = open_chunk(chunk, kind, |v| (v >= oldest).then_some(0))?;
    Ok((v, n, &chunk[CHUNK_HEADER..]))
}

/// Validates a chunk header; returns (version, count, records), the
/// records `record_len(version)` bytes each (None: a version this kind
/// does not exist in).
pub fn open_chunk(
    chunk: &[u8],
    kind: StateKind,
    record_len: impl Fn(u16) -> Option<usize>,
) -> Result<(u16, usize, &[u8]), StateError> {
    if chunk.len() < CHUNK_HEADER {
        return Err(StateError::Truncated);
    }
    if chunk[..4] != MAGIC {
        return Err(StateError::BadMagic);
    }
    let v = u16::from_be_bytes([chunk[4], chunk[5]]);
    let record_len = (OLDEST_VERSION..=VERSION)
        .contains(&v)
        .then(|| record_len(v))
        .flatten()
        .ok_or(StateError::Version(v))?;
    if chunk[6] != kind as u8 {
        return Err(StateError::WrongKind(chunk[6]));
    }
    let n = u32::from_be_bytes([chunk[7], chunk[8], chunk[9], chunk[10]]) as usize;
    let body = &chunk[CHUNK_HEADER..];
    if body.len() < n.saturating_mul(record_len) {
        return Err(StateError::Truncated);
    }
    Ok((v, n, &body[..n * record_len]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk_of(records: usize, record_len: usize) -> Vec<u8> {
        let mut c = Vec::new();
        let at = begin_chunk(&mut c, StateKind::NatSessions);
        c.extend((0..records * record_len).map(|i| i as u8));
        set_count(&mut c, at, records as u32);
        c
    }

    #[test]
    fn a_chunk_split_in_records_keeps_its_header_order_and_bytes() {
        let whole = chunk_of(70, 29);
        let mut parts = Vec::new();
        split_records(&whole, 29, 32, &mut parts);
        let counts: Vec<u32> = parts
            .iter()
            .map(|p| u32::from_be_bytes([p[7], p[8], p[9], p[10]]))
            .collect();
        assert_eq!(counts, [32, 32, 6]);
        for p in &parts {
            assert_eq!(p[..7], whole[..7], "magic, version, kind");
        }
        let bodies: Vec<u8> = parts.iter().flat_map(|p| p[CHUNK_HEADER..].to_vec()).collect();
        assert_eq!(bodies, whole[CHUNK_HEADER..]);
    }

    #[test]
    fn a_small_an_empty_or_a_ragged_chunk_stays_whole() {
        for (name, chunk) in [
            ("small", chunk_of(32, 29)),
            ("empty", chunk_of(0, 29)),
            ("ragged", {
                let mut c = chunk_of(40, 29);
                c.pop();
                c
            }),
            ("header cut", b"LSST\0".to_vec()),
        ] {
            let mut parts = Vec::new();
            split_records(&chunk, 29, 32, &mut parts);
            assert_eq!(parts, vec![chunk], "{name}");
        }
    }
}
