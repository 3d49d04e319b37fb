//! lockstep's replication frame (DESIGN.md §4), carried after an Ethernet
//! header with EtherType 0x88B5 on the dedicated replication link.
//!
//! ```text
//!  0       1       2               4                               8
//! +-------+-------+---------------+-------------------------------+
//! |version| type  |     shard     |             epoch             |
//! +-------+-------+---------------+-------------------------------+
//! |                          seq (8)                              |
//! |                        tx_done (8)                            |
//! |                        time_ns (8)                            |
//! +---------------+---------------+-------------------------------+
//! | ingress port  |    length     |  body (length bytes) ...
//! +---------------+---------------+
//! ```
//! All fields big-endian. For DATA the body is the original frame as
//! received; KEEPALIVE has an empty body; AUDIT, SYNC_MARK and SWITCHOVER
//! bodies are defined by the checkpoint protocol.
//!
//! BATCH carries several small packets of one shard, received in one burst
//! (same epoch, `tx_done` and time): its body is records back to back,
//!
//! ```text
//! +---------------+---------------+
//! | ingress port  |    length     |  frame (length bytes) ...
//! +---------------+---------------+
//! ```
//!
//! the first with sequence `seq`, each next one the sequence after; the
//! header's own ingress is 0. The shared fields are sent once, so a record
//! costs 4 bytes beside its frame instead of a 36-byte header (for 64-byte
//! packets: 21 in a 1514-byte frame instead of 15). At most
//! [`MAX_BATCH_RECORDS`]; a node of this version that predates BATCH refuses
//! the type as malformed, as with ACK.
//!
//! CHECKPOINT brings a backup that is not synchronized into sync (the
//! checkpoint protocol, `worker::checkpoint`): its body is a
//! [`CheckpointBody`] then a piece of the function's state chunks
//! (`nf::state`); the pieces of checkpoint `id`, numbered from 0, put end
//! to end, are the chunks. SYNC_MARK closes it: its body a [`SyncMarkBody`],
//! its `seq` the sequence boundary the state was taken at. A node of this
//! version that predates CHECKPOINT refuses the type as malformed.
//!
//! ACK goes the other way, from a backup to the primary: `seq` is the last
//! sequence of `shard` the backup processed in `epoch`, the body an
//! [`AckBody`] (flow control, `replication::flow`). A node of this version
//! that predates ACK refuses the type as malformed, so the type needed no
//! new version.
//!
//! The ingress field's low byte is the data port (0 inside, 1 outside); its
//! high byte holds [`ingress`] flags for packets steered between shards.
//! Version 2 added them.

use super::{get_u16, get_u32, get_u64, set_u16, set_u32, set_u64, Result, WireError};

pub const VERSION: u8 = 2;
pub const HEADER_LEN: usize = 36;
/// A BATCH record's own header: ingress and length.
pub const RECORD_HEADER_LEN: usize = 4;
/// Most records a BATCH holds (a backup decodes a batch's record offsets
/// into an array of this size).
pub const MAX_BATCH_RECORDS: usize = 256;

mod field {
    pub const VERSION: usize = 0;
    pub const TYPE: usize = 1;
    pub const SHARD: usize = 2;
    pub const EPOCH: usize = 4;
    pub const SEQ: usize = 8;
    pub const TX_DONE: usize = 16;
    pub const TIME_NS: usize = 24;
    pub const INGRESS: usize = 32;
    pub const LENGTH: usize = 34;
    pub const BODY: usize = 36;
}

/// The ingress field: data port, steering flags and what the receiving
/// NIC verified.
pub mod ingress {
    /// The low byte: the data port the packet arrived on.
    pub const PORT_MASK: u16 = 0x00ff;
    /// This shard received the packet and handed it to the shard that owns
    /// it: a backup retires its copy of it and does not process it (the
    /// owner's stream carries it again, with [`STEERED`]).
    pub const HANDED_OFF: u16 = 0x0100;
    /// Another shard received the packet: a backup has no copy of it in
    /// this shard's ingress window.
    pub const STEERED: u16 = 0x0200;
    /// With [`STEERED`]: a copy every shard sees (`PacketCtx::copy`).
    pub const COPY: u16 = 0x0400;
    /// The primary's NIC verified the packet's IPv4 header checksum
    /// (`PacketCtx::ip_checksum_ok`): the backup skips verifying it, as
    /// the primary did, so both decide on the same inputs.
    pub const IP_CHECKSUM_OK: u16 = 0x0800;
    /// The flags that say a record belongs to shard steering: a record
    /// with none of them is the receiving shard's own packet.
    pub const STEERING: u16 = HANDED_OFF | STEERED | COPY;
    /// Every flag this version knows.
    pub const FLAGS: u16 = STEERING | IP_CHECKSUM_OK;
}

/// The body of an AUDIT: the digest of slice `slice` of `of` of a shard's
/// state at the marker's sequence boundary (big-endian, 16 bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AuditBody {
    pub slice: u32,
    pub of: u32,
    pub digest: u64,
}

impl AuditBody {
    pub const LEN: usize = 16;

    pub fn emit(&self) -> [u8; Self::LEN] {
        let mut b = [0u8; Self::LEN];
        set_u32(&mut b, 0, self.slice);
        set_u32(&mut b, 4, self.of);
        set_u64(&mut b, 8, self.digest);
        b
    }

    /// `None` when shorter than [`AuditBody::LEN`] or naming no slice of
    /// its count.
    pub fn parse(b: &[u8]) -> Option<AuditBody> {
        if b.len() < Self::LEN {
            return None;
        }
        let a = AuditBody {
            slice: get_u32(b, 0),
            of: get_u32(b, 4),
            digest: get_u64(b, 8),
        };
        (a.slice < a.of).then_some(a)
    }
}

/// The head of a CHECKPOINT's body (big-endian, 9 bytes): the checkpoint,
/// this piece's number in it, and whether the piece ends a chunk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckpointBody {
    pub id: u32,
    pub index: u32,
    pub ends_chunk: bool,
}

impl CheckpointBody {
    pub const LEN: usize = 9;

    pub fn emit(&self) -> [u8; Self::LEN] {
        let mut b = [0u8; Self::LEN];
        set_u32(&mut b, 0, self.id);
        set_u32(&mut b, 4, self.index);
        b[8] = self.ends_chunk as u8;
        b
    }

    /// The head and the piece after it; `None` when shorter than the head
    /// or with a flag this version does not know.
    pub fn parse(b: &[u8]) -> Option<(CheckpointBody, &[u8])> {
        if b.len() < Self::LEN || b[8] > 1 {
            return None;
        }
        let c = CheckpointBody {
            id: get_u32(b, 0),
            index: get_u32(b, 4),
            ends_chunk: b[8] == 1,
        };
        Some((c, &b[Self::LEN..]))
    }
}

/// The body of a SYNC_MARK (big-endian, 8 bytes): the checkpoint it closes
/// and how many CHECKPOINT pieces it had.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SyncMarkBody {
    pub id: u32,
    pub pieces: u32,
}

impl SyncMarkBody {
    pub const LEN: usize = 8;

    pub fn emit(&self) -> [u8; Self::LEN] {
        let mut b = [0u8; Self::LEN];
        set_u32(&mut b, 0, self.id);
        set_u32(&mut b, 4, self.pieces);
        b
    }

    pub fn parse(b: &[u8]) -> Option<SyncMarkBody> {
        (b.len() >= Self::LEN).then(|| SyncMarkBody {
            id: get_u32(b, 0),
            pieces: get_u32(b, 4),
        })
    }
}

/// What follows an [`AckBody`] from a backup installing a checkpoint
/// (big-endian, 8 bytes): which checkpoint, and how many of its pieces it
/// installed — the primary keeps at most a window of pieces in flight.
/// A node that predates it reads the ACK's first 8 bytes only.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckpointProgress {
    pub id: u32,
    pub pieces: u32,
}

impl CheckpointProgress {
    pub const LEN: usize = 8;

    pub fn emit(&self) -> [u8; Self::LEN] {
        let mut b = [0u8; Self::LEN];
        set_u32(&mut b, 0, self.id);
        set_u32(&mut b, 4, self.pieces);
        b
    }

    /// From the ACK's whole body: None when it carries none.
    pub fn parse_after_ack(body: &[u8]) -> Option<CheckpointProgress> {
        let b = body.get(AckBody::LEN..AckBody::LEN + Self::LEN)?;
        Some(CheckpointProgress {
            id: get_u32(b, 0),
            pieces: get_u32(b, 4),
        })
    }
}

/// The body of an ACK: which backup, and whether its shard is
/// synchronized (big-endian, 8 bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AckBody {
    pub node: u32,
    pub synced: bool,
}

impl AckBody {
    pub const LEN: usize = 8;
    const SYNCED: u32 = 1;

    pub fn emit(&self) -> [u8; Self::LEN] {
        let mut b = [0u8; Self::LEN];
        set_u32(&mut b, 0, self.node);
        set_u32(&mut b, 4, if self.synced { Self::SYNCED } else { 0 });
        b
    }

    /// `None` when shorter than [`AckBody::LEN`] or with flags this version
    /// does not know.
    pub fn parse(b: &[u8]) -> Option<AckBody> {
        if b.len() < Self::LEN {
            return None;
        }
        let flags = get_u32(b, 4);
        (flags & !Self::SYNCED == 0).then_some(AckBody {
            node: get_u32(b, 0),
            synced: flags & Self::SYNCED != 0,
        })
    }
}

/// Frame types.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum FrameType {
    /// An ingress packet, with its sequence number and time.
    Data = 1,
    /// Shard idle: carries `tx_done` and time so the backup can tell a quiet
    /// link from a dead primary.
    Keepalive = 2,
    /// Digest of a slice of the shard's state at sequence `seq`.
    Audit = 3,
    /// The checkpoint's final round was taken at sequence `seq`.
    SyncMark = 4,
    /// Planned hand-over: the primary stopped after sequence `seq`.
    Switchover = 5,
    /// From a backup: it processed the shard up to `seq`.
    Ack = 6,
    /// Several DATA records from `seq` on (see the module's header).
    Batch = 7,
    /// A piece of a checkpoint's state, taken at sequence `seq`.
    Checkpoint = 8,
}

impl FrameType {
    pub fn from_u8(v: u8) -> Option<FrameType> {
        Some(match v {
            1 => FrameType::Data,
            2 => FrameType::Keepalive,
            3 => FrameType::Audit,
            4 => FrameType::SyncMark,
            5 => FrameType::Switchover,
            6 => FrameType::Ack,
            7 => FrameType::Batch,
            8 => FrameType::Checkpoint,
            _ => return None,
        })
    }
}

/// The decoded header fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ReplHeader {
    pub shard: u16,
    pub epoch: u32,
    pub seq: u64,
    pub tx_done: u64,
    pub time_ns: u64,
    pub ingress: u16,
    pub length: u16,
}

/// A replication frame view (starting after the Ethernet header).
/// `new_checked` guarantees: known version and type, body within buffer.
#[derive(Debug)]
pub struct ReplicationFrame<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> ReplicationFrame<T> {
    pub fn new_unchecked(buffer: T) -> Self {
        ReplicationFrame { buffer }
    }

    pub fn new_checked(buffer: T) -> Result<Self> {
        let b = buffer.as_ref();
        if b.len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        if b[field::VERSION] != VERSION || FrameType::from_u8(b[field::TYPE]).is_none() {
            return Err(WireError::Malformed);
        }
        if HEADER_LEN + get_u16(b, field::LENGTH) as usize > b.len() {
            return Err(WireError::Truncated);
        }
        Ok(ReplicationFrame { buffer })
    }

    pub fn frame_type(&self) -> FrameType {
        FrameType::from_u8(self.buffer.as_ref()[field::TYPE]).unwrap_or(FrameType::Keepalive)
    }

    // Inlined into the generic worker that calls it (another crate): a
    // header returned through memory is read back before its stores land.
    #[inline(always)]
    pub fn header(&self) -> ReplHeader {
        let b = self.buffer.as_ref();
        ReplHeader {
            shard: get_u16(b, field::SHARD),
            epoch: get_u32(b, field::EPOCH),
            seq: get_u64(b, field::SEQ),
            tx_done: get_u64(b, field::TX_DONE),
            time_ns: get_u64(b, field::TIME_NS),
            ingress: get_u16(b, field::INGRESS),
            length: get_u16(b, field::LENGTH),
        }
    }

    /// The shard, alone (a batch's records are walked by these three
    /// before any is decoded whole).
    #[inline]
    pub fn shard(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::SHARD)
    }

    #[inline]
    pub fn ingress(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::INGRESS)
    }

    #[inline]
    pub fn length(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::LENGTH)
    }

    /// The body (`length` bytes after the header).
    pub fn body(&self) -> &[u8] {
        let b = self.buffer.as_ref();
        let len = get_u16(b, field::LENGTH) as usize;
        &b[field::BODY..field::BODY + len]
    }
}

/// One record of a BATCH body: its ingress, and where its frame lies in
/// the body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchRecord {
    pub ingress: u16,
    pub start: usize,
    pub len: usize,
}

/// The records of a BATCH body, in order, up to the first that runs past
/// the body (or the [`MAX_BATCH_RECORDS`]th).
pub struct BatchRecords<'a> {
    body: &'a [u8],
    off: usize,
    count: usize,
}

impl<'a> BatchRecords<'a> {
    pub fn new(body: &'a [u8]) -> BatchRecords<'a> {
        BatchRecords { body, off: 0, count: 0 }
    }

    /// Whether every byte of the body belonged to a record (once the
    /// iterator is spent: false for a truncated or over-long body).
    pub fn complete(&self) -> bool {
        self.off == self.body.len()
    }
}

impl Iterator for BatchRecords<'_> {
    type Item = BatchRecord;

    #[inline]
    fn next(&mut self) -> Option<BatchRecord> {
        let head = self.body.get(self.off..self.off + RECORD_HEADER_LEN)?;
        let len = get_u16(head, 2) as usize;
        let start = self.off + RECORD_HEADER_LEN;
        if self.count == MAX_BATCH_RECORDS || start + len > self.body.len() {
            return None;
        }
        self.off = start + len;
        self.count += 1;
        Some(BatchRecord {
            ingress: get_u16(head, 0),
            start,
            len,
        })
    }
}

/// Writes a BATCH record's header.
#[inline]
pub fn put_record_header(out: &mut [u8; RECORD_HEADER_LEN], ingress: u16, len: u16) {
    // One 4-byte store (an array of four byte shifts compiles to four).
    *out = ((ingress as u32) << 16 | len as u32).to_be_bytes();
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> ReplicationFrame<T> {
    /// Writes a header (the body, if any, follows separately).
    pub fn emit(&mut self, t: FrameType, h: &ReplHeader) {
        let b = self.buffer.as_mut();
        b[field::VERSION] = VERSION;
        b[field::TYPE] = t as u8;
        set_u16(b, field::SHARD, h.shard);
        set_u32(b, field::EPOCH, h.epoch);
        set_u64(b, field::SEQ, h.seq);
        set_u64(b, field::TX_DONE, h.tx_done);
        set_u64(b, field::TIME_NS, h.time_ns);
        set_u16(b, field::INGRESS, h.ingress);
        set_u16(b, field::LENGTH, h.length);
    }

    /// Sets the body's length (a batch's, once its last record is in).
    pub fn set_length(&mut self, length: u16) {
        set_u16(self.buffer.as_mut(), field::LENGTH, length);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A BATCH body of records with these (ingress, frame length).
    fn batch_body(records: &[(u16, usize)]) -> Vec<u8> {
        let mut b = Vec::new();
        for (i, &(ingress, len)) in records.iter().enumerate() {
            let mut head = [0u8; RECORD_HEADER_LEN];
            put_record_header(&mut head, ingress, len as u16);
            b.extend_from_slice(&head);
            b.extend((0..len).map(|k| (i + k) as u8));
        }
        b
    }

    #[test]
    fn batch_records_are_read_back_in_order_with_their_ingress_and_bytes() {
        let recs = [(0u16, 60usize), (1 | ingress::STEERED, 0), (1, 1), (0, 300)];
        let body = batch_body(&recs);
        let mut it = BatchRecords::new(&body);
        let got: Vec<BatchRecord> = it.by_ref().collect();
        assert!(it.complete());
        assert_eq!(
            got.iter().map(|r| (r.ingress, r.len)).collect::<Vec<_>>(),
            recs.to_vec()
        );
        assert_eq!(got.iter().map(|r| r.start).collect::<Vec<_>>(), vec![4, 68, 72, 77]);
        for (i, r) in got.iter().enumerate() {
            let want: Vec<u8> = (0..r.len).map(|k| (i + k) as u8).collect();
            assert_eq!(&body[r.start..r.start + r.len], &want[..]);
        }
    }

    #[test]
    fn a_batch_record_running_past_the_body_ends_the_records_and_the_body_is_incomplete() {
        let body = batch_body(&[(0, 10), (1, 20)]);
        for cut in [body.len() - 1, 14 + 3, 14 + 4 + 19] {
            let mut it = BatchRecords::new(&body[..cut]);
            assert_eq!(it.by_ref().count(), 1, "cut at {cut}: only the first record");
            assert!(!it.complete(), "cut at {cut}");
        }
        let mut empty = BatchRecords::new(&[]);
        assert_eq!(empty.next(), None);
        assert!(empty.complete());
    }

    #[test]
    fn a_batch_holds_at_most_max_batch_records() {
        let body = batch_body(&vec![(0, 0); MAX_BATCH_RECORDS + 1]);
        let mut it = BatchRecords::new(&body);
        assert_eq!(it.by_ref().count(), MAX_BATCH_RECORDS);
        assert!(!it.complete(), "the record past the limit is left unread");
    }

    fn header() -> ReplHeader {
        ReplHeader {
            shard: 1,
            epoch: 7,
            seq: 0x0102_0304_0506_0708,
            tx_done: 41,
            time_ns: 1_000_000_123,
            ingress: 1,
            length: 3,
        }
    }

    #[test]
    fn emitted_header_and_body_decode_back() {
        let mut b = [0u8; HEADER_LEN + 3];
        ReplicationFrame::new_unchecked(&mut b[..]).emit(FrameType::Data, &header());
        b[HEADER_LEN..].copy_from_slice(b"xyz");
        let f = ReplicationFrame::new_checked(&b[..]).unwrap();
        assert_eq!(f.frame_type(), FrameType::Data);
        assert_eq!(f.header(), header());
        assert_eq!(f.body(), b"xyz");
        assert_eq!((f.shard(), f.ingress(), f.length()), (1, 1, 3));
        assert_eq!(&b[8..16], &[1, 2, 3, 4, 5, 6, 7, 8], "seq is big-endian at offset 8");
    }

    #[test]
    fn body_longer_than_buffer_is_truncated() {
        let mut b = [0u8; HEADER_LEN + 2];
        ReplicationFrame::new_unchecked(&mut b[..]).emit(FrameType::Data, &header());
        assert_eq!(ReplicationFrame::new_checked(&b[..]).unwrap_err(), WireError::Truncated);
    }

    #[test]
    fn checkpoint_bodies_decode_back_and_short_or_flagged_ones_are_refused() {
        let c = CheckpointBody {
            id: 7,
            index: 0x0102_0304,
            ends_chunk: true,
        };
        let mut b = c.emit().to_vec();
        b.extend_from_slice(b"chunk");
        assert_eq!(CheckpointBody::parse(&b), Some((c, &b"chunk"[..])));
        assert_eq!(&b[4..9], &[1, 2, 3, 4, 1], "index big-endian, then the flag");
        b[8] = 2;
        assert_eq!(CheckpointBody::parse(&b), None, "a flag this version does not know");
        assert_eq!(CheckpointBody::parse(&c.emit()[..8]), None);
        let m = SyncMarkBody { id: 7, pieces: 3130 };
        assert_eq!(SyncMarkBody::parse(&m.emit()), Some(m));
        assert_eq!(SyncMarkBody::parse(&m.emit()[..7]), None);
        let ack = AckBody { node: 2, synced: false }.emit();
        assert_eq!(
            CheckpointProgress::parse_after_ack(&ack),
            None,
            "a plain ACK carries none"
        );
        let p = CheckpointProgress { id: 7, pieces: 64 };
        let with = [&ack[..], &p.emit()[..]].concat();
        assert_eq!(
            AckBody::parse(&with),
            Some(AckBody { node: 2, synced: false }),
            "what an older node reads"
        );
        assert_eq!(CheckpointProgress::parse_after_ack(&with), Some(p));
    }

    #[test]
    fn an_audit_body_decodes_back_and_one_naming_no_slice_is_refused() {
        let a = AuditBody {
            slice: 63,
            of: 64,
            digest: 0x0102_0304_0506_0708,
        };
        assert_eq!(AuditBody::parse(&a.emit()), Some(a));
        assert_eq!(&a.emit()[8..], &[1, 2, 3, 4, 5, 6, 7, 8], "big-endian digest last");
        assert_eq!(AuditBody::parse(&AuditBody { slice: 64, ..a }.emit()), None);
        assert_eq!(AuditBody::parse(&AuditBody { slice: 0, of: 0, ..a }.emit()), None);
        assert_eq!(AuditBody::parse(&a.emit()[..15]), None);
    }

    #[test]
    fn an_ack_body_decodes_back_and_one_with_unknown_flags_is_refused() {
        let a = AckBody {
            node: 0x0102_0304,
            synced: true,
        };
        assert_eq!(a.emit(), [1, 2, 3, 4, 0, 0, 0, 1]);
        assert_eq!(AckBody::parse(&a.emit()), Some(a));
        let u = AckBody { synced: false, ..a };
        assert_eq!(AckBody::parse(&u.emit()), Some(u));
        assert_eq!(AckBody::parse(&[1, 2, 3, 4, 0, 0, 0, 3]), None);
        assert_eq!(AckBody::parse(&a.emit()[..7]), None);
    }

    #[test]
    fn unknown_version_or_type_is_malformed() {
        let mut b = [0u8; HEADER_LEN + 3];
        ReplicationFrame::new_unchecked(&mut b[..]).emit(FrameType::Keepalive, &header());
        b[0] = 1;
        assert_eq!(
            ReplicationFrame::new_checked(&b[..]).unwrap_err(),
            WireError::Malformed,
            "version 1 had no steering flags"
        );
        b[0] = VERSION;
        b[1] = 9;
        assert_eq!(ReplicationFrame::new_checked(&b[..]).unwrap_err(), WireError::Malformed);
    }
}
