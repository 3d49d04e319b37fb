//! Network functions: what a node does to each packet.
//!
//! A function is pure code over a [`Frame`]: given the bytes, the ingress
//! side and the (replicated) time, it rewrites the frame in place and says
//! where it goes. Determinism (DESIGN.md §3): the outcome and every state
//! change depend only on those inputs and the order of calls, never on a
//! local clock, an RNG or hash-map iteration order. That is what lets a
//! backup fed the same packets end in the same state as the primary.

pub mod drop_reason;
pub mod flow_table;
pub mod forward;
pub mod hash;
pub mod hold;
pub mod nat;
pub mod neighbor;
pub mod ratelimit;
pub mod reclaim;
pub mod route;
pub mod router;
pub mod state;
pub mod transient;

pub use drop_reason::DropReason;
pub use forward::Forward;
pub use router::{Router, RouterConfig};

use crate::frame::Frame;
use state::{SessionState, StateError};

/// The two data ports of a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Side {
    Inside = 0,
    Outside = 1,
}

impl Side {
    pub const ALL: [Side; 2] = [Side::Inside, Side::Outside];

    #[inline]
    pub fn other(self) -> Side {
        match self {
            Side::Inside => Side::Outside,
            Side::Outside => Side::Inside,
        }
    }

    #[inline]
    pub fn index(self) -> usize {
        self as usize
    }

    pub fn from_index(i: usize) -> Option<Side> {
        match i {
            0 => Some(Side::Inside),
            1 => Some(Side::Outside),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Side::Inside => "inside",
            Side::Outside => "outside",
        }
    }
}

/// What the function knows about a packet besides its bytes.
#[derive(Clone, Copy, Debug)]
pub struct PacketCtx {
    pub ingress: Side,
    /// Nanoseconds on the primary's clock at ingress (replicated to backups).
    pub now_ns: u64,
    /// A copy of a packet another shard received and showed to every shard
    /// ([`Owner::Every`]): learn from it; the shard that received it
    /// answers it.
    pub copy: bool,
    /// The receiving NIC verified the IPv4 header checksum and found it
    /// good (RX offload): the function need not verify it again. Part of
    /// the packet's replicated input (`ingress::IP_CHECKSUM_OK`), so a
    /// backup decides exactly as its primary did.
    pub ip_checksum_ok: bool,
}

impl PacketCtx {
    pub fn new(ingress: Side, now_ns: u64) -> PacketCtx {
        PacketCtx {
            ingress,
            now_ns,
            copy: false,
            ip_checksum_ok: false,
        }
    }

    /// The context of a packet whose replication ingress flags are `flags`
    /// (a copy for this shard's state only when they say COPY; its header
    /// checksum verified when they say IP_CHECKSUM_OK).
    #[inline]
    pub fn with_flags(ingress: Side, now_ns: u64, flags: u16) -> PacketCtx {
        use crate::wire::replication::ingress;
        PacketCtx {
            ingress,
            now_ns,
            copy: flags & ingress::COPY != 0,
            ip_checksum_ok: flags & ingress::IP_CHECKSUM_OK != 0,
        }
    }
}

/// With several shards: which one a packet belongs to. The NIC spreads
/// packets over the shards by a flow hash; a function whose state a packet
/// needs may live on another shard (a NAT reply's session, a neighbour
/// another shard learned) says so here, before the packet is replicated,
/// and the worker steers it there (DESIGN.md §3, "Steering").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Owner {
    /// The shard it arrived on.
    Here,
    /// That shard.
    Shard(u16),
    /// The shard it arrived on, and every other shard sees a copy
    /// (`PacketCtx::copy`) in its own sequence, so that state every shard
    /// needs (neighbours) is learned by all in a replicated order.
    Every,
}

/// What becomes of a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Transmit the (rewritten) frame on this side.
    Forward(Side),
    /// The packet is dropped for `dropped`, and the frame now carries
    /// another packet (an ICMP error, an ARP request) to send on `out`.
    Replaced { out: Side, dropped: DropReason },
    /// Free it and count the reason.
    Drop(DropReason),
    /// The function used it up without an error (e.g. an ARP reply it learned
    /// from); freed and counted as consumed.
    Consumed,
}

/// A network function instance: the state of one shard.
pub trait NetworkFunction: Send + 'static {
    /// Short name (`forward`, `router`, `nat`).
    fn name(&self) -> &'static str;

    /// How many leading bytes of a frame `process` may rewrite in place. The
    /// replication step copies that many bytes into the replica's header so
    /// the backup sees the frame as received; beyond them the buffer is
    /// shared and must stay untouched (growing into headroom or tailroom is
    /// fine: those bytes are not part of the replica).
    fn rewrite_span(&self) -> usize;

    /// True for functions whose verdict depends only on the ingress side,
    /// never on the bytes or on earlier packets (`forward`). The worker then
    /// asks once per burst, with an empty frame, and moves the burst to its
    /// egress whole, as testpmd's io mode does.
    const BURST_VERDICT: bool = false;

    /// True for functions that keep no state from one packet to the next
    /// (`forward`): a backup that starts after the primary's stream began,
    /// or misses frames of it, joins it again at the next frame instead of
    /// waiting for the primary's checkpoint (see `replication::seq`). The
    /// MACs a transparent function learns are not counted as state: they
    /// only aim the announcements after a takeover.
    const STATELESS: bool = false;

    /// True for functions that pass frames on with their MAC addresses
    /// (`forward`): after a takeover the new primary announces the MACs it
    /// saw behind each port so learning switches move them.
    const TRANSPARENT_L2: bool = false;

    /// A human-readable listing of the function's state, at most `max`
    /// lines (`show sessions`).
    fn describe(&self, _max: usize) -> String {
        String::new()
    }

    /// A digest of slice `slice` of `of` of the function's flow state, for
    /// the in-band sync audit: the primary sends its digest at a sequence
    /// boundary and the backup compares its own at the same point, so a
    /// backup whose state silently diverged stops counting as synchronized.
    /// 0 for a function without state.
    fn audit_digest(&self, _slice: u32, _of: u32) -> u64 {
        0
    }

    /// The function's flow state, table by table in a fixed order, as the
    /// checkpoint protocol takes it (`worker::checkpoint`); none for a
    /// function without state.
    fn state_tables(&self) -> Vec<&dyn SessionState> {
        Vec::new()
    }

    /// Installs a checkpoint's chunk into the table of its kind.
    fn install_state(&mut self, chunk: &[u8]) -> Result<usize, StateError> {
        Err(StateError::WrongKind(state::chunk_kind(chunk).unwrap_or(0)))
    }

    /// Forgets every flow state (a checkpoint is about to install the
    /// primary's); the configuration stays.
    fn clear_state(&mut self) {}

    /// Starts (again, from now) or stops listing what changes in the
    /// tables, so that a checkpoint's `changed_since` from a generation
    /// read at or after the start costs what changed, not a scan of the
    /// table. A hint: without it `changed_since` answers the same.
    fn track_changes(&mut self, _on: bool) {}

    /// Which shard owns `frame`, received on `ingress`. Called only when the
    /// node has several shards, on packets from the data ports, before they
    /// are replicated; must not change state.
    fn owner(&self, _frame: &[u8], _ingress: Side) -> Owner {
        Owner::Here
    }

    /// Passes of [`NetworkFunction::prefetch`] over the next burst before
    /// its first packet is processed (0: none; asked once per burst, so a
    /// function can prefetch only while its tables are too big for the
    /// cache).
    #[inline]
    fn prefetch_stages(&self) -> usize {
        0
    }

    /// Pass `stage` over every packet of a burst before the first is
    /// processed: a function whose per-packet lookups miss the cache asks
    /// for the lines here, so the misses of a whole burst overlap instead
    /// of stalling one packet each; a chain of lookups (an index, then the
    /// entry it names) takes one pass per link, each finding the lines the
    /// last one asked for. A hint only: must not change state.
    #[inline]
    fn prefetch(&self, _frame: &[u8], _ingress: Side, _stage: usize) {}

    /// Processes one frame.
    fn process(&mut self, frame: &mut Frame<'_>, ctx: &PacketCtx) -> Verdict;

    /// The common case on the frame's bytes alone: `Some(out)` when the
    /// frame was rewritten in place and goes out on `out`, exactly as
    /// [`NetworkFunction::process`] would have done it; `None` when nothing
    /// was written or changed and `process` must decide.
    #[inline(always)]
    fn fast(&mut self, _data: &mut [u8], _ctx: &PacketCtx) -> Option<Side> {
        None
    }

    /// What [`NetworkFunction::process`] does with a frame
    /// [`NetworkFunction::fast`] declined. A function whose `process` tries
    /// its fast path first gives the rest here, so the worker, which has
    /// just tried it, does not try it twice.
    fn process_general(&mut self, frame: &mut Frame<'_>, ctx: &PacketCtx) -> Verdict {
        self.process(frame, ctx)
    }
}
