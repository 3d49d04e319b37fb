//! Stateful source NAT (RFC 4787 / 5382 behaviour): inside hosts' TCP, UDP
//! and ICMP echo leave with the NAT address and a port the NAT allocates;
//! replies are translated back. Endpoint-dependent mapping: a session is
//! (protocol, inside address and port, remote address and port), so one
//! external port serves many remotes and the table scales past 64 K.
//! ICMP errors about a session's packets are translated both ways, the
//! quoted packet included (RFC 5508), so path MTU discovery, traceroute and
//! "port unreachable" work through the NAT.
//!
//! Deterministic (DESIGN.md §3): the external port is the inside port when
//! free, else the first free one probing from a fixed hash of the session
//! key; sessions live in a slab reused last-freed-first; timeouts are read
//! against the packet's (replicated) time; expiry happens on lookup and by
//! a sweep of one slab entry per packet. No RNG, no clock, no iteration
//! over a hash map.

use std::num::NonZeroU8;

use super::flow_table::{FlowKey, FlowTable};
use super::hash::{fx, mix2};
use super::state::{
    begin_chunk, chunk_kind, open_chunk, set_count, split_records, SessionState, StateError, StateKind,
};
use super::{DropReason, Side};
use crate::dpdk::huge::reserve_huge;
use crate::wire::checksum::{self, Delta};
use crate::wire::icmp::{IcmpPacket, IcmpType, HEADER_LEN as ICMP_HEADER_LEN};
use crate::wire::ipv4::{IpProtocol, Ipv4Packet, MAX_HEADER_LEN, MIN_HEADER_LEN};
use crate::wire::tcp::{TcpFlags, TcpPacket, CHECKSUM_END as TCP_CHECKSUM_END};
use crate::wire::udp::UdpPacket;
use crate::wire::{get_u16, get_u32, get_u64};

const SEC: u64 = 1_000_000_000;

/// Idle timeouts, in ns of replicated time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// TCP established (RFC 5382: at least 2 h 4 min).
    pub tcp_established: u64,
    /// TCP opening or closing (RFC 5382: at least 4 min).
    pub tcp_transitory: u64,
    /// TCP after a RST.
    pub tcp_reset: u64,
    /// UDP (RFC 4787: at least 2 min; 5 min recommended).
    pub udp: u64,
    pub icmp: u64,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            tcp_established: 7440 * SEC,
            tcp_transitory: 240 * SEC,
            tcp_reset: 10 * SEC,
            udp: 300 * SEC,
            icmp: 60 * SEC,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NatConfig {
    /// The outside address sessions leave with.
    pub address: u32,
    pub port_lo: u16,
    pub port_hi: u16,
    pub max_sessions: usize,
    pub timeouts: Timeouts,
}

/// TCP progress bits of a session.
mod tcp {
    pub const SYN_OUT: u8 = 1;
    pub const ESTABLISHED: u8 = 2;
    pub const FIN_OUT: u8 = 4;
    pub const FIN_IN: u8 = 8;
    pub const RST: u8 = 16;
}

/// One translation.
///
/// 32 bytes, and a free slab entry costs none more: the protocol is never
/// 0 (TCP, UDP or ICMP), so `Option<Session>` keeps its tag there. Two
/// entries share each cache line and none straddles two, so a look-up
/// reads one line of the slab (at 40 bytes, half the entries spanned two).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Session {
    proto: NonZeroU8,
    pub inside_ip: u32,
    pub inside_port: u16,
    pub remote_ip: u32,
    pub remote_port: u16,
    pub ext_port: u16,
    /// TCP progress bits (0 for UDP and ICMP).
    pub tcp: u8,
    pub last_ns: u64,
    /// The state generation of the last change.
    pub gen: u64,
}

/// How far into the IP packet the NAT writes: the longest IP header and
/// the first 20 bytes of TCP (what the router declares as its rewrite span).
pub const IP_SPAN: usize = MAX_HEADER_LEN + 20;

#[derive(Clone, Copy)]
enum Direction {
    In,
    Out,
}

fn is_icmp_error<T: AsRef<[u8]>>(ip: &Ipv4Packet<T>) -> bool {
    ip.protocol() == IpProtocol::ICMP
        && ip.frag_offset() == 0
        && IcmpPacket::new_checked(ip.payload()).is_ok_and(|i| i.is_error())
}

/// A session as the inside sees it: protocol, inside address and port,
/// remote address and port, packed in 16 bytes (protocol and port share a
/// word) so that the per-packet lookup hashes it in one multiply and
/// compares it in two.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct OutKey([u32; 4]);

impl OutKey {
    #[inline]
    fn new(proto: u8, inside_ip: u32, inside_port: u16, remote_ip: u32, remote_port: u16) -> OutKey {
        OutKey([
            (proto as u32) << 16 | inside_port as u32,
            inside_ip,
            remote_ip,
            remote_port as u32,
        ])
    }

    /// (protocol, inside address, inside port, remote address, remote port)
    fn parts(&self) -> (u8, u32, u16, u32, u16) {
        let [w0, ip, rip, rport] = self.0;
        ((w0 >> 16) as u8, ip, w0 as u16, rip, rport as u16)
    }
}

impl FlowKey for OutKey {
    const FILLER: OutKey = OutKey([0; 4]);

    #[inline]
    fn flow_hash(&self) -> u64 {
        let [w0, w1, w2, w3] = self.0.map(u64::from);
        // Both words stay below 2^56: mix2's factors are never zero.
        mix2(w0 << 32 | w1, w3 << 32 | w2)
    }
}

/// A session as the outside sees it: protocol, NAT port, remote address
/// and port, packed in 12 bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct InKey([u32; 3]);

impl InKey {
    #[inline]
    fn new(proto: u8, ext_port: u16, remote_ip: u32, remote_port: u16) -> InKey {
        InKey([(proto as u32) << 16 | ext_port as u32, remote_ip, remote_port as u32])
    }
}

/// The audit digest hashes keys through `fx`: the same word as the table.
impl std::hash::Hash for OutKey {
    #[inline]
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        h.write_u64(self.flow_hash());
    }
}

impl FlowKey for InKey {
    const FILLER: InKey = InKey([0; 3]);

    #[inline]
    fn flow_hash(&self) -> u64 {
        let [w0, w1, w2] = self.0.map(u64::from);
        mix2(w0 << 32 | w1, w2)
    }
}

const _: () = assert!(std::mem::size_of::<Option<Session>>() == 32);

impl Session {
    /// The IP protocol number: TCP, UDP or ICMP.
    #[inline]
    pub fn proto(&self) -> u8 {
        self.proto.get()
    }

    fn out_key(&self) -> OutKey {
        OutKey::new(
            self.proto(),
            self.inside_ip,
            self.inside_port,
            self.remote_ip,
            self.remote_port,
        )
    }

    fn in_key(&self) -> InKey {
        InKey::new(self.proto(), self.ext_port, self.remote_ip, self.remote_port)
    }

    fn timeout(&self, t: &Timeouts) -> u64 {
        match self.proto() {
            IpProtocol::TCP => {
                if self.tcp & tcp::RST != 0 {
                    t.tcp_reset
                } else if self.tcp & tcp::ESTABLISHED != 0 && self.tcp & (tcp::FIN_IN | tcp::FIN_OUT) == 0 {
                    t.tcp_established
                } else {
                    t.tcp_transitory
                }
            }
            IpProtocol::UDP => t.udp,
            _ => t.icmp,
        }
    }

    fn expired(&self, now: u64, t: &Timeouts) -> bool {
        now.saturating_sub(self.last_ns) > self.timeout(t)
    }
}

/// The session table of one shard.
pub struct Nat {
    cfg: NatConfig,
    slab: Vec<Option<Session>>,
    free: Vec<u32>,
    /// Slab position by inside key, three keys per cache line.
    out_map: FlowTable<OutKey, 3>,
    /// Slab position by outside key, four keys per cache line.
    in_map: FlowTable<InKey, 4>,
    sweep: usize,
    gen: u64,
    /// Deleted sessions (generation, key) for deltas, oldest first; bounded.
    deleted: std::collections::VecDeque<(u64, OutKey)>,
    /// The generation of the newest deletion that fell out of `deleted`:
    /// a delta from before it would miss that deletion.
    deleted_floor: u64,
    pub created: u64,
    pub expired: u64,
    /// Ports new sessions' searches looked at, in all.
    pub port_probes: u64,
    /// This table's shard and the node's shard count: an inside host's
    /// sessions live on one shard ([`Nat::shard_of_inside`]), and the
    /// external port range is cut into `shards` blocks, this shard
    /// allocating from block `shard` only, so a reply's destination port
    /// names the shard that holds its session ([`Nat::owner_of_inbound`]).
    shard: u16,
    shards: u16,
    preallocated: bool,
    /// While a checkpoint runs: the slots changed since a generation, so
    /// its delta is read from them instead of from the whole slab (a scan
    /// of a million slots would stall the shard for milliseconds).
    changes: Option<ChangeLog>,
}

/// The slots whose session changed (touched, placed, created) since
/// generation `from`, each once, in the order they first changed.
struct ChangeLog {
    from: u64,
    slots: Vec<u32>,
    /// One bit per slot: already in `slots`.
    listed: Vec<u64>,
}

impl ChangeLog {
    fn new(from: u64, slab_len: usize) -> ChangeLog {
        ChangeLog {
            from,
            slots: Vec::new(),
            listed: vec![0; slab_len.div_ceil(64)],
        }
    }

    #[inline]
    fn note(&mut self, slot: u32) {
        let (w, bit) = (slot as usize / 64, 1u64 << (slot % 64));
        if w >= self.listed.len() {
            self.listed.resize(w + 1, 0);
        }
        if self.listed[w] & bit == 0 {
            self.listed[w] |= bit;
            self.slots.push(slot);
        }
    }
}

/// A session key in the table it is looked up in.
#[derive(Clone, Copy)]
enum Lookup {
    Out(OutKey),
    In(InKey),
}

/// What translating a session's packet writes: its external port, its
/// inside address and port.
#[derive(Clone, Copy, Debug)]
struct Mapping {
    ext_port: u16,
    inside_port: u16,
    inside_ip: u32,
}

/// A packet the router's fast path can translate: its live session, found
/// by [`Nat::find_fast`] before anything changed.
#[derive(Clone, Copy, Debug)]
pub struct FastHit {
    idx: u32,
    outbound: bool,
    proto: u8,
    tcp_flags: u8,
    /// The port translated: the source outbound, the destination inbound.
    old_port: u16,
    /// The destination once translated (inbound: the inside host's).
    pub dst: u32,
}

/// Where the L4 identifiers of a packet sit.
struct L4 {
    proto: u8,
    src_port: u16,
    dst_port: u16,
    tcp_flags: u8,
}

const DELETED_LOG: usize = 65536;

/// Ports a new session's search looks at, at most, besides its own: each
/// is an index look-up, and a destination whose ports are (nearly) all
/// taken (a busy DNS resolver's port 53) would otherwise cost each new
/// flow to it a walk of the whole block, 64 K look-ups, milliseconds of
/// the shard's time. With the stride below, a search fails while a
/// destination's block is 90% taken about once in 700 000 (0.9^128), 95%
/// taken once in 700 (counted, `ports_exhausted`).
const PORT_PROBES: u32 = 128;

/// A stride through `size` ports that visits every one (coprime with
/// `size`), from `seed`.
fn coprime_stride(seed: u32, size: u32) -> u32 {
    if size <= 2 {
        return 1;
    }
    let gcd = |mut a: u32, mut b: u32| {
        while b != 0 {
            (a, b) = (b, a % b);
        }
        a
    };
    let mut step = 1 + seed % (size - 1);
    while gcd(step, size) != 1 {
        step = if step + 1 < size { step + 1 } else { 1 };
    }
    step
}

/// Tables at least this big are prefetched for a burst (measured here:
/// 11% slower at 1 024 sessions, no gain up to ~30 000 sessions, 2.8 MB;
/// 3x faster at 100 000, 9.4 MB).
const PREFETCH_FROM_BYTES: usize = 4 << 20;

impl Nat {
    pub fn new(cfg: NatConfig) -> Nat {
        // Address space for every session it may hold, taken from the
        // kernel page by page as sessions come: the slab never grows by
        // copying itself (a stall of the shard, tens of ms at a million).
        // Refused (a small machine, overcommit off): it grows as it fills.
        let mut slab = Vec::new();
        let _ = slab.try_reserve_exact(cfg.max_sessions);
        Nat {
            cfg,
            slab,
            free: Vec::new(),
            out_map: FlowTable::new(),
            in_map: FlowTable::new(),
            sweep: 0,
            gen: 0,
            deleted: std::collections::VecDeque::new(),
            deleted_floor: 0,
            created: 0,
            expired: 0,
            port_probes: 0,
            shard: 0,
            shards: 1,
            preallocated: false,
            changes: None,
        }
    }

    /// The table of shard `shard` of `shards` (the port block it allocates
    /// from). The caller checks the range holds at least `shards` ports.
    pub fn for_shard(mut self, shard: u16, shards: u16) -> Nat {
        self.shards = shards.max(1);
        self.shard = shard.min(self.shards - 1);
        self
    }

    /// The same table with room for `max_sessions` made up front (both
    /// indexes and the slab, touched now, on huge pages): it never grows,
    /// so no session creation does a growth's work. The price is memory
    /// from the start and a small population spread over large tables
    /// (less of it in cache than in a table grown to fit). An error when
    /// the memory cannot be had (it names how much).
    pub fn preallocated(mut self) -> Result<Nat, String> {
        let n = self.cfg.max_sessions;
        let refused = || {
            let bytes = FlowTable::<OutKey, 3>::bytes_for(n)
                + FlowTable::<InKey, 4>::bytes_for(n)
                + n.saturating_mul(std::mem::size_of::<Option<Session>>());
            format!("cannot have {} MiB for {n} sessions up front", bytes >> 20)
        };
        self.out_map = FlowTable::with_capacity(n).ok_or_else(refused)?;
        self.in_map = FlowTable::with_capacity(n).ok_or_else(refused)?;
        let more = n.saturating_sub(self.slab.len());
        reserve_huge(&mut self.slab, more).ok_or_else(refused)?;
        self.preallocated = true;
        Ok(self)
    }

    /// Forgets every session (a checkpoint is about to install the
    /// primary's); tables made up front stay made. A delta from before
    /// this is refused.
    pub fn clear(&mut self) {
        self.slab.clear();
        self.free.clear();
        self.out_map.clear();
        self.in_map.clear();
        self.sweep = 0;
        self.deleted.clear();
        self.gen += 1;
        self.deleted_floor = self.gen;
        self.changes = None;
    }

    /// Starts (again, from the current generation) or stops listing the
    /// slots that change: while on, [`SessionState::changed_since`] from a
    /// generation at or after the start reads the list, not the slab.
    pub fn track_changes(&mut self, on: bool) {
        self.changes = on.then(|| ChangeLog::new(self.gen, self.slab.len()));
    }

    /// Whether the tables were made for `max_sessions` up front.
    pub fn is_preallocated(&self) -> bool {
        self.preallocated
    }

    /// Times a session index grew (each growth spread over the inserts
    /// around it).
    pub fn index_growths(&self) -> u64 {
        self.out_map.growths() + self.in_map.growths()
    }

    /// Ports per shard's block (the last block also takes the remainder).
    fn block_len(&self) -> u32 {
        ((self.cfg.port_hi as u32 - self.cfg.port_lo as u32 + 1) / self.shards as u32).max(1)
    }

    /// The external ports shard `k` allocates from.
    pub fn port_block(&self, k: u16) -> (u16, u16) {
        let (lo, hi) = (self.cfg.port_lo as u32, self.cfg.port_hi as u32);
        let n = self.shards as u32;
        let block = self.block_len();
        let first = lo + block * k as u32;
        let last = if k as u32 + 1 >= n { hi } else { first + block - 1 };
        (first.min(hi) as u16, last.min(hi) as u16)
    }

    /// Which shard allocated external port `port`, if it is in the range.
    pub fn shard_of_port(&self, port: u16) -> Option<u16> {
        let (lo, hi) = (self.cfg.port_lo as u32, self.cfg.port_hi as u32);
        let p = port as u32;
        if !(lo..=hi).contains(&p) {
            return None;
        }
        Some(((p - lo) / self.block_len()).min(self.shards as u32 - 1) as u16)
    }

    /// The shard whose session an outside-to-inside packet addressed to
    /// the NAT address belongs to: the block of its destination port (the
    /// echo identifier for ICMP), or of the quoted source port for an ICMP
    /// error. Read-only; `None` when there is no such port (the packet
    /// stays where it arrived and meets its drop there).
    pub fn owner_of_inbound(&self, ip_bytes: &[u8]) -> Option<u16> {
        let ip = Ipv4Packet::new_checked(ip_bytes).ok()?;
        if ip.dst_u32() != self.cfg.address || ip.frag_offset() != 0 {
            return None;
        }
        let p = ip.payload();
        let port = match ip.protocol() {
            IpProtocol::TCP | IpProtocol::UDP if p.len() >= 4 => get_u16(p, 2),
            IpProtocol::ICMP => {
                let i = IcmpPacket::new_checked(p).ok()?;
                if i.is_echo() {
                    i.echo_ident()
                } else if i.is_error() {
                    // The quote: a packet the NAT sent, from its port.
                    let q = p.get(ICMP_HEADER_LEN..)?;
                    let qhl = ((*q.first()? & 0x0f) as usize) * 4;
                    let l4 = q.get(qhl..qhl + 8)?;
                    match *q.get(9)? {
                        IpProtocol::TCP | IpProtocol::UDP => get_u16(l4, 0),
                        IpProtocol::ICMP => get_u16(l4, 4),
                        _ => return None,
                    }
                } else {
                    return None;
                }
            }
            _ => return None,
        };
        self.shard_of_port(port)
    }

    /// The shard that holds an inside host's sessions: a fixed hash of its
    /// address (VPP's NAT44 hands in-to-out traffic to its worker the same
    /// way). A NIC's flow hash cannot be trusted with it: the NIC sees the
    /// inside and outside tuples of a session as two unrelated flows, and
    /// a software fanout may move a flow when its socket rehashes. Keyed by
    /// the address alone, the host's ICMP errors about its sessions land
    /// on the same shard.
    pub fn shard_of_inside(&self, inside_ip: u32) -> u16 {
        // The hash's high half, scaled to the shards by a multiply: its low
        // bits follow the address's low bits alone (a modulo of them put
        // every host whose address is a multiple of 4 on one of 4 shards).
        (((fx(&inside_ip) >> 32) * self.shards as u64) >> 32) as u16
    }

    pub fn config(&self) -> &NatConfig {
        &self.cfg
    }

    pub fn len(&self) -> usize {
        self.out_map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.out_map.is_empty()
    }

    /// Live sessions in slab order.
    pub fn sessions(&self) -> impl Iterator<Item = &Session> {
        self.slab.iter().flatten()
    }

    /// Approximate bytes of memory per session (slab slot and both index
    /// entries, with the maps' load factor).
    pub fn bytes_per_session() -> usize {
        // Buckets of 64 bytes hold 3 inside keys or 4 outside keys; a table
        // runs between 1/2 and 7/8 full, 11/16 on average.
        std::mem::size_of::<Option<Session>>() + (64 * 16 / (3 * 11)) + (64 * 16 / (4 * 11))
    }

    fn next_gen(&mut self) -> u64 {
        self.gen += 1;
        self.gen
    }

    fn remove(&mut self, idx: u32) {
        if let Some(s) = self.slab.get_mut(idx as usize).and_then(|s| s.take()) {
            self.out_map.remove(&s.out_key());
            self.in_map.remove(&s.in_key());
            self.free.push(idx);
            let g = self.next_gen();
            if self.deleted.len() == DELETED_LOG {
                if let Some((dropped, _)) = self.deleted.pop_front() {
                    self.deleted_floor = dropped;
                }
            }
            self.deleted.push_back((g, s.out_key()));
        }
    }

    /// Looks at one slab entry per packet and frees it if expired: the
    /// cursor goes round the table once per `len` packets, far more often
    /// than the shortest timeout elapses at any useful rate.
    #[inline]
    fn sweep(&mut self, now: u64) {
        self.sweep += 1;
        if self.sweep >= self.slab.len() {
            self.sweep = 0;
        }
        let i = self.sweep;
        if self
            .slab
            .get(i)
            .is_some_and(|s| s.is_some_and(|s| s.expired(now, &self.cfg.timeouts)))
        {
            self.remove(i as u32);
            self.expired += 1;
        }
    }

    fn insert(&mut self, s: Session) -> u32 {
        // A slot a checkpoint filled may still be listed free until its
        // layout comes ([`Nat::place`]): skipped.
        let idx = loop {
            match self.free.pop() {
                Some(i) if self.slab.get(i as usize).is_some_and(Option::is_none) => {
                    self.slab[i as usize] = Some(s);
                    break i;
                }
                Some(_) => continue,
                None => {
                    self.slab.push(Some(s));
                    break (self.slab.len() - 1) as u32;
                }
            }
        };
        self.out_map.insert(s.out_key(), idx);
        self.in_map.insert(s.in_key(), idx);
        if let Some(log) = self.changes.as_mut() {
            log.note(idx);
        }
        idx
    }

    /// The inside port itself when free and in this shard's block (port
    /// preservation), else the first free one of at most [`PORT_PROBES`]
    /// ports of the block, visited from a fixed hash of the session with a
    /// stride from the same hash (so neither preserved ports nor the
    /// search's own picks pile up into long runs of taken ports). Returns
    /// the port and how many ports it looked at.
    fn allocate_port(
        &self,
        proto: u8,
        inside_ip: u32,
        inside_port: u16,
        remote_ip: u32,
        remote_port: u16,
    ) -> (Option<u16>, u32) {
        let (lo, hi) = self.port_block(self.shard);
        let (lo, hi) = (lo as u32, hi as u32);
        let free = |p: u32| {
            !self
                .in_map
                .contains_key(&InKey::new(proto, p as u16, remote_ip, remote_port))
        };
        let mut probes = 0;
        if (lo..=hi).contains(&(inside_port as u32)) {
            probes += 1;
            if free(inside_port as u32) {
                return (Some(inside_port), probes);
            }
        }
        let size = hi - lo + 1;
        let h = fx(&(proto, inside_ip, inside_port, remote_ip, remote_port));
        let mut at = (h % size as u64) as u32;
        // The stride is worked out only when the first look fails.
        let mut step = None;
        for _ in 0..PORT_PROBES.min(size) {
            probes += 1;
            if free(lo + at) {
                return (Some((lo + at) as u16), probes);
            }
            // Below `size` both: one subtraction wraps it.
            at += *step.get_or_insert_with(|| coprime_stride((h >> 32) as u32, size));
            if at >= size {
                at -= size;
            }
        }
        (None, probes)
    }

    /// Installs a checkpointed session in the slot it held on the primary.
    /// Whatever holds the slot or either of its keys here goes: the
    /// primary no longer has it, as it cannot hold two sessions in one
    /// slot or under one key (its deletion is in the same checkpoint).
    /// Refused, with nothing changed, when the slot lies past the table's
    /// limit or the table would outgrow it.
    fn place(&mut self, slot: u32, mut s: Session) -> Result<(), StateError> {
        let i = slot as usize;
        if i >= self.cfg.max_sessions {
            return Err(StateError::Rejected);
        }
        let occupant = self.slab.get(i).copied().flatten().map(|_| slot);
        let mut gone = [self.out_map.get(&s.out_key()), self.in_map.get(&s.in_key()), occupant];
        gone.sort_unstable();
        let mut last = None;
        let mut going = 0;
        for g in gone.iter().flatten() {
            going += (last != Some(*g)) as usize;
            last = Some(*g);
        }
        if self.out_map.len() - going >= self.cfg.max_sessions {
            return Err(StateError::Rejected);
        }
        for g in gone.iter().flatten() {
            // A repeat was removed the first time: a no-op.
            self.remove(*g);
        }
        while self.slab.len() <= i {
            self.free.push(self.slab.len() as u32);
            self.slab.push(None);
        }
        s.gen = self.next_gen();
        self.slab[i] = Some(s);
        self.out_map.insert(s.out_key(), slot);
        self.in_map.insert(s.in_key(), slot);
        if let Some(log) = self.changes.as_mut() {
            log.note(slot);
        }
        Ok(())
    }

    /// The free slots in reuse order (the last one first), without the
    /// stale entries a checkpoint's placed sessions left: what
    /// [`Nat::insert`] will take, in the order it will take it.
    fn free_slots(&self) -> Vec<u32> {
        let mut seen = vec![false; self.slab.len()];
        let mut out: Vec<u32> = Vec::with_capacity(self.free.len());
        for &f in self.free.iter().rev() {
            let i = f as usize;
            if self.slab.get(i).is_some_and(Option::is_none) && !std::mem::replace(&mut seen[i], true) {
                out.push(f);
            }
        }
        out.reverse();
        out
    }

    /// A layout chunk: the slab's length, the sweep's place and the free
    /// slots, all checked against the sessions installed before anything
    /// changes (every slot past the length empty, each free slot empty and
    /// listed once, every empty slot listed).
    fn install_layout(&mut self, chunk: &[u8]) -> Result<usize, StateError> {
        let (_, n, body) = open_chunk(chunk, StateKind::NatLayout, |v| (v >= 2).then_some(4))?;
        let mut words = body.chunks_exact(4).map(|w| get_u32(w, 0) as usize);
        let (Some(len), Some(sweep)) = (words.next(), words.next()) else {
            return Err(StateError::Truncated);
        };
        if len > self.cfg.max_sessions || self.slab.iter().skip(len).any(Option::is_some) {
            return Err(StateError::Rejected);
        }
        let mut listed = vec![false; len];
        let mut free = Vec::with_capacity(n - 2);
        for f in words {
            if f >= len || std::mem::replace(&mut listed[f], true) || self.slab.get(f).is_some_and(Option::is_some) {
                return Err(StateError::Rejected);
            }
            free.push(f as u32);
        }
        let empty = (0..len)
            .filter(|&i| self.slab.get(i).is_none_or(Option::is_none))
            .count();
        if empty != free.len() {
            return Err(StateError::Rejected);
        }
        self.slab.resize(len, None);
        self.free = free;
        self.sweep = sweep;
        Ok(n)
    }

    fn l4(ip: &Ipv4Packet<&mut [u8]>) -> Result<L4, DropReason> {
        if ip.frag_offset() != 0 {
            return Err(DropReason::Fragment);
        }
        let p = ip.payload();
        match ip.protocol() {
            IpProtocol::TCP => {
                let t = TcpPacket::new_checked(p).map_err(|_| DropReason::Truncated)?;
                Ok(L4 {
                    proto: IpProtocol::TCP,
                    src_port: t.src_port(),
                    dst_port: t.dst_port(),
                    tcp_flags: t.flags(),
                })
            }
            IpProtocol::UDP => {
                let u = UdpPacket::new_checked(p).map_err(|_| DropReason::Truncated)?;
                Ok(L4 {
                    proto: IpProtocol::UDP,
                    src_port: u.src_port(),
                    dst_port: u.dst_port(),
                    tcp_flags: 0,
                })
            }
            IpProtocol::ICMP => {
                let i = IcmpPacket::new_checked(p).map_err(|_| DropReason::Truncated)?;
                if !i.is_echo() {
                    return Err(DropReason::UnsupportedProtocol);
                }
                // The echo identifier plays the port on both sides.
                Ok(L4 {
                    proto: IpProtocol::ICMP,
                    src_port: i.echo_ident(),
                    dst_port: i.echo_ident(),
                    tcp_flags: if i.msg_type() == IcmpType::ECHO_REQUEST { 1 } else { 0 },
                })
            }
            _ => Err(DropReason::UnsupportedProtocol),
        }
    }

    /// A packet of session `idx` went by: TCP progress, last seen, change
    /// generation. Returns what its translation writes (not the whole
    /// session: a copy read back right after the stores to it stalls on
    /// store forwarding).
    #[inline]
    fn touch(&mut self, idx: u32, tcp_flags: u8, outbound: bool, now: u64) -> Option<Mapping> {
        let gen = self.next_gen();
        let s = self.slab.get_mut(idx as usize)?.as_mut()?;
        if let Some(log) = self.changes.as_mut() {
            // Its first change since the log began (a later one finds it
            // listed by its generation, without the bit's line).
            if s.gen <= log.from {
                log.note(idx);
            }
        }
        if s.proto() == IpProtocol::TCP {
            s.tcp |= tcp_bits(tcp_flags, outbound);
        }
        s.last_ns = now;
        s.gen = gen;
        Some(Mapping {
            ext_port: s.ext_port,
            inside_port: s.inside_port,
            inside_ip: s.inside_ip,
        })
    }

    /// Prefetch passes a worker makes over a burst: two (the index line,
    /// then the slab entry) once the tables reach `PREFETCH_FROM_BYTES`,
    /// none while they fit in the cache (then the passes only cost).
    #[inline]
    pub fn prefetch_stages(&self) -> usize {
        let bytes =
            self.out_map.bytes() + self.in_map.bytes() + self.slab.len() * std::mem::size_of::<Option<Session>>();
        if bytes >= PREFETCH_FROM_BYTES {
            2
        } else {
            0
        }
    }

    /// Asks the CPU for the lines the lookup of an IPv4 packet (header on)
    /// arriving on `ingress` will read: stage 0 the session's index line,
    /// stage 1 (once that line is in) its slab entry.
    #[inline]
    pub fn prefetch(&self, ip: &[u8], ingress: Side, stage: usize) {
        match (self.lookup_key(ip, ingress), stage) {
            (None, _) => {}
            (Some(Lookup::Out(k)), 0) => self.out_map.prefetch(&k),
            (Some(Lookup::In(k)), 0) => self.in_map.prefetch(&k),
            (Some(key), _) => {
                if let Some(s) = self.index_of(key).and_then(|i| self.slab.get(i as usize)) {
                    crate::dpdk::prefetch(s);
                }
            }
        }
    }

    /// The slab position the prefetch passes find for a packet: the
    /// session `outbound` or `inbound` will translate it with, if any.
    pub fn prefetch_target(&self, ip: &[u8], ingress: Side) -> Option<u32> {
        self.lookup_key(ip, ingress).and_then(|k| self.index_of(k))
    }

    #[inline]
    fn index_of(&self, key: Lookup) -> Option<u32> {
        match key {
            Lookup::Out(k) => self.out_map.get(&k),
            Lookup::In(k) => self.in_map.get(&k),
        }
    }

    /// The key a packet's session is looked up by, from the fixed offsets
    /// alone (no checks: a packet that is not what it seems costs a useless
    /// prefetch, and `outbound`/`inbound` still validate it).
    #[inline]
    fn lookup_key(&self, ip: &[u8], ingress: Side) -> Option<Lookup> {
        let h = ip.get(..MIN_HEADER_LEN)?;
        let hl = ((h[0] & 0x0f) as usize) * 4;
        let proto = h[9];
        let l4 = ip.get(hl..hl + 8)?;
        let (src, dst) = (get_u32(h, 12), get_u32(h, 16));
        let (sport, dport) = match proto {
            IpProtocol::TCP | IpProtocol::UDP => (get_u16(l4, 0), get_u16(l4, 2)),
            IpProtocol::ICMP => (get_u16(l4, 4), 0),
            _ => return None,
        };
        match ingress {
            Side::Inside => Some(Lookup::Out(OutKey::new(proto, src, sport, dst, dport))),
            Side::Outside if dst == self.cfg.address => {
                let (ext, remote_port) = if proto == IpProtocol::ICMP {
                    (sport, 0)
                } else {
                    (dport, sport)
                };
                Some(Lookup::In(InKey::new(proto, ext, src, remote_port)))
            }
            Side::Outside => None,
        }
    }

    /// The fast path's half of [`Nat::outbound`] (ingress inside) or
    /// [`Nat::inbound`] (outside, to the NAT address): the live session of
    /// a UDP or TCP packet that is not a fragment. `ip` holds a valid IPv4
    /// header without options and its whole total length. None for
    /// anything else — ICMP, fragments, truncated L4 headers, no session,
    /// an expired one — and then the general path decides. Changes
    /// nothing (a new flow's miss only prefetches).
    // Always inlined: a FastHit returned through memory is written in
    // field-sized stores and read back in words, a store-forwarding stall.
    #[inline(always)]
    pub fn find_fast(&self, ip: &[u8], ingress: Side, now: u64) -> Option<FastHit> {
        let h = ip.get(..MIN_HEADER_LEN)?;
        let proto = h[9];
        if get_u16(h, 6) & 0x1fff != 0 {
            return None;
        }
        let l4 = ip.get(MIN_HEADER_LEN..get_u16(h, 2) as usize)?;
        let (sport, dport, tcp_flags) = match proto {
            IpProtocol::UDP => {
                let u = UdpPacket::new_checked(l4).ok()?;
                (u.src_port(), u.dst_port(), 0)
            }
            IpProtocol::TCP => {
                let t = TcpPacket::new_checked(l4).ok()?;
                (t.src_port(), t.dst_port(), t.flags())
            }
            _ => return None,
        };
        let (src, dst) = (get_u32(h, 12), get_u32(h, 16));
        let (idx, outbound, old_port) = match ingress {
            Side::Inside => {
                let Some(idx) = self.out_map.get(&OutKey::new(proto, src, sport, dst, dport)) else {
                    // A new flow: the general path creates its session,
                    // asking first whether the inside port is free outside.
                    // That line comes in while it parses the packet again
                    // (else its miss would follow this one's, not overlap).
                    self.in_map.prefetch(&InKey::new(proto, sport, dst, dport));
                    return None;
                };
                (idx, true, sport)
            }
            Side::Outside => (self.in_map.get(&InKey::new(proto, dport, src, sport))?, false, dport),
        };
        let s = self.slab.get(idx as usize)?.as_ref()?;
        if s.expired(now, &self.cfg.timeouts) {
            return None;
        }
        Some(FastHit {
            idx,
            outbound,
            proto,
            tcp_flags,
            old_port,
            dst: if outbound { dst } else { s.inside_ip },
        })
    }

    /// Translates the packet `hit` was found for, with exactly the state
    /// changes and bytes [`Nat::outbound`] or [`Nat::inbound`] would have
    /// made: the sweep step, the session touched, address and port
    /// rewritten, both checksums patched. (The sweep frees expired
    /// sessions only, so never `hit`'s, live at `now`.)
    #[inline(always)]
    pub fn apply_fast(&mut self, hit: FastHit, ip: &mut [u8], now: u64) {
        self.sweep(now);
        let Some(s) = self.touch(hit.idx, hit.tcp_flags, hit.outbound, now) else {
            return;
        };
        let mut ip = Ipv4Packet::new_unchecked(ip);
        // Outbound the source becomes the NAT's, inbound the destination
        // the inside host's.
        let (old_ip, new_ip, new_port) = if hit.outbound {
            (ip.rewrite_src(self.cfg.address), self.cfg.address, s.ext_port)
        } else {
            (ip.rewrite_dst(s.inside_ip), s.inside_ip, s.inside_port)
        };
        rewrite_l4(
            ip.payload_mut(),
            hit.proto,
            hit.outbound,
            hit.old_port,
            new_port,
            old_ip,
            new_ip,
        );
    }

    /// Translates an inside-to-outside packet (the IPv4 packet, header on)
    /// in place: source address and port become the session's.
    pub fn outbound(&mut self, ip_bytes: &mut [u8], now: u64) -> Result<(), DropReason> {
        self.sweep(now);
        let mut ip = Ipv4Packet::new_checked(ip_bytes).map_err(|_| DropReason::Malformed)?;
        if is_icmp_error(&ip) {
            return self.icmp_error(&mut ip, Direction::Out, now).map(|_| ());
        }
        let l4 = Self::l4(&ip)?;
        let (src, dst) = (ip.src_u32(), ip.dst_u32());
        let remote_port = if l4.proto == IpProtocol::ICMP { 0 } else { l4.dst_port };
        if l4.proto == IpProtocol::ICMP && l4.tcp_flags == 0 {
            // An echo reply from inside answers nothing this NAT created.
            return Err(DropReason::UnsupportedProtocol);
        }
        let key = OutKey::new(l4.proto, src, l4.src_port, dst, remote_port);
        let mut idx = self.out_map.get(&key);
        if let Some(i) = idx {
            if self.slab[i as usize].is_some_and(|s| s.expired(now, &self.cfg.timeouts)) {
                self.remove(i);
                self.expired += 1;
                idx = None;
            }
        }
        let idx = match idx {
            Some(i) => i,
            None => {
                if l4.proto == IpProtocol::TCP
                    && l4.tcp_flags & (TcpFlags::SYN | TcpFlags::ACK | TcpFlags::RST) != TcpFlags::SYN
                {
                    return Err(DropReason::NoSession);
                }
                if self.out_map.len() >= self.cfg.max_sessions {
                    return Err(DropReason::TableFull);
                }
                // Before anything is counted or searched (l4 gives TCP,
                // UDP or ICMP only: never 0).
                let proto = NonZeroU8::new(l4.proto).ok_or(DropReason::UnsupportedProtocol)?;
                let (ext, probes) = self.allocate_port(l4.proto, src, l4.src_port, dst, remote_port);
                self.port_probes += probes as u64;
                let ext = ext.ok_or(DropReason::PortsExhausted)?;
                let gen = self.next_gen();
                self.created += 1;
                self.insert(Session {
                    proto,
                    inside_ip: src,
                    inside_port: l4.src_port,
                    remote_ip: dst,
                    remote_port,
                    ext_port: ext,
                    tcp: 0,
                    last_ns: now,
                    gen,
                })
            }
        };
        let s = self.touch(idx, l4.tcp_flags, true, now).ok_or(DropReason::NoSession)?;
        let (ext, nat_ip) = (s.ext_port, self.cfg.address);
        let old_src = ip.rewrite_src(nat_ip);
        rewrite_l4(ip.payload_mut(), l4.proto, true, l4.src_port, ext, old_src, nat_ip);
        Ok(())
    }

    /// Translates an outside-to-inside packet addressed to the NAT address;
    /// returns the inside destination it now carries.
    pub fn inbound(&mut self, ip_bytes: &mut [u8], now: u64) -> Result<u32, DropReason> {
        self.sweep(now);
        let mut ip = Ipv4Packet::new_checked(ip_bytes).map_err(|_| DropReason::Malformed)?;
        if is_icmp_error(&ip) {
            return self.icmp_error(&mut ip, Direction::In, now);
        }
        let l4 = Self::l4(&ip)?;
        if l4.proto == IpProtocol::ICMP && l4.tcp_flags != 0 {
            // An echo request to the NAT address is the router's to answer.
            return Err(DropReason::NoSession);
        }
        let remote_port = if l4.proto == IpProtocol::ICMP { 0 } else { l4.src_port };
        let key = InKey::new(l4.proto, l4.dst_port, ip.src_u32(), remote_port);
        let idx = self.in_map.get(&key).ok_or(DropReason::NoSession)?;
        if self.slab[idx as usize].is_some_and(|s| s.expired(now, &self.cfg.timeouts)) {
            self.remove(idx);
            self.expired += 1;
            return Err(DropReason::NoSession);
        }
        let s = self.touch(idx, l4.tcp_flags, false, now).ok_or(DropReason::NoSession)?;
        let (inside_ip, inside_port) = (s.inside_ip, s.inside_port);
        let old_dst = ip.rewrite_dst(inside_ip);
        rewrite_l4(
            ip.payload_mut(),
            l4.proto,
            false,
            l4.dst_port,
            inside_port,
            old_dst,
            inside_ip,
        );
        Ok(inside_ip)
    }

    /// An ICMP error about a packet of a session (RFC 5508): translated as
    /// that session's traffic in the same direction is, the quoted packet
    /// included (its addresses, port or echo identifier, and checksums), so
    /// path MTU discovery and traceroute work through the NAT. Inbound, the
    /// error is about a packet the NAT sent out (quoted source: the NAT
    /// address); outbound, about one it let in (quoted destination: the
    /// inside host). It does not refresh the session. Returns the new
    /// outer destination.
    fn icmp_error(&mut self, ip: &mut Ipv4Packet<&mut [u8]>, dir: Direction, now: u64) -> Result<u32, DropReason> {
        let hl = ip.header_len();
        let icmp = ip.payload();
        if checksum::checksum(icmp) != 0 {
            return Err(DropReason::BadChecksum);
        }
        // The quote: an IPv4 header and at least 8 bytes of its payload.
        let q = &icmp[ICMP_HEADER_LEN..];
        let qhl = ((q.first().copied().unwrap_or(0) & 0x0f) as usize) * 4;
        if q.len() < MIN_HEADER_LEN || q[0] >> 4 != 4 || qhl < MIN_HEADER_LEN || q.len() < qhl + 8 {
            return Err(DropReason::Truncated);
        }
        let proto = q[9];
        let (qsrc, qdst) = (get_u32(q, 12), get_u32(q, 16));
        let ql4 = &q[qhl..];
        let (qsport, qdport) = match proto {
            IpProtocol::TCP | IpProtocol::UDP => (get_u16(ql4, 0), get_u16(ql4, 2)),
            IpProtocol::ICMP if matches!(ql4[0], IcmpType::ECHO_REQUEST | IcmpType::ECHO_REPLY) => {
                (get_u16(ql4, 4), get_u16(ql4, 4))
            }
            _ => return Err(DropReason::UnsupportedProtocol),
        };
        let remote_port = |p: u16| if proto == IpProtocol::ICMP { 0 } else { p };
        let idx = match dir {
            // About a packet we sent: NAT address and port -> remote.
            Direction::In if qsrc == self.cfg.address => {
                self.in_map.get(&InKey::new(proto, qsport, qdst, remote_port(qdport)))
            }
            Direction::In => None,
            // About a packet we let in: remote -> inside host and port.
            Direction::Out => self
                .out_map
                .get(&OutKey::new(proto, qdst, qdport, qsrc, remote_port(qsport))),
        }
        .ok_or(DropReason::NoSession)?;
        let s = self
            .slab
            .get(idx as usize)
            .copied()
            .flatten()
            .ok_or(DropReason::NoSession)?;
        if s.expired(now, &self.cfg.timeouts) {
            return Err(DropReason::NoSession);
        }
        // Which quoted address and port change, from what to what.
        let (old_addr, new_addr, old_port, new_port) = match dir {
            Direction::In => (self.cfg.address, s.inside_ip, s.ext_port, s.inside_port),
            Direction::Out => (s.inside_ip, self.cfg.address, s.inside_port, s.ext_port),
        };
        // Offsets in the IP packet; every write stays inside the span the
        // router declares (the replica shares the rest of the buffer).
        let q0 = hl + ICMP_HEADER_LEN;
        let l4 = q0 + qhl;
        let end = ip.total_len();
        let l4_written = if proto == IpProtocol::TCP && end - l4 >= TCP_CHECKSUM_END {
            TCP_CHECKSUM_END
        } else {
            8
        };
        if l4 + l4_written > IP_SPAN {
            return Err(DropReason::UnsupportedProtocol);
        }
        let outer = match dir {
            Direction::In => {
                ip.rewrite_dst(new_addr);
                new_addr
            }
            Direction::Out => {
                ip.rewrite_src(new_addr);
                ip.dst_u32()
            }
        };
        // The quoted packet, rewritten as its session's packets are: its
        // source (it went out) or destination (it came in).
        let b = ip.as_mut_bytes();
        let mut quoted = Ipv4Packet::new_unchecked(&mut b[q0..l4]);
        match dir {
            Direction::In => quoted.rewrite_src(new_addr),
            Direction::Out => quoted.rewrite_dst(new_addr),
        };
        let source = matches!(dir, Direction::In);
        rewrite_l4(&mut b[l4..end], proto, source, old_port, new_port, old_addr, new_addr);
        // The error's own checksum covers the quote: recomputed whole (it
        // verified above, and errors are rare).
        IcmpPacket::new_unchecked(&mut ip.as_mut_bytes()[hl..end]).fill_checksum();
        Ok(outer)
    }

    /// The audit's digest of slab slice `slice` of `of`: every slot in it,
    /// by position (primary and backup fill the slab in the same order), so
    /// the work per audit is a fraction of the table, never all of it.
    pub fn audit_digest(&self, slice: u32, of: u32) -> u64 {
        let of = of.max(1) as usize;
        let n = self.slab.len();
        let (a, b) = (n * slice as usize / of, n * (slice as usize + 1) / of);
        let mut d = fx(&(n, slice));
        for (i, s) in self.slab.iter().enumerate().take(b.min(n)).skip(a) {
            if let Some(s) = s {
                d ^= fx(&(i, s.out_key(), s.ext_port, s.tcp, s.last_ns));
            }
        }
        d
    }

    /// The session of an inside flow, if any (for tests and `show sessions`).
    pub fn lookup_outbound(
        &self,
        proto: u8,
        inside_ip: u32,
        inside_port: u16,
        remote_ip: u32,
        remote_port: u16,
    ) -> Option<&Session> {
        let i = self
            .out_map
            .get(&OutKey::new(proto, inside_ip, inside_port, remote_ip, remote_port))?;
        self.slab.get(i as usize)?.as_ref()
    }
}

fn tcp_bits(flags: u8, outbound: bool) -> u8 {
    let mut b = 0;
    if flags & TcpFlags::RST != 0 {
        b |= tcp::RST;
    }
    if flags & TcpFlags::SYN != 0 && outbound {
        b |= tcp::SYN_OUT;
    }
    // Any ACK from the remote after our SYN: the three-way handshake is
    // done as far as a NAT needs to know.
    if flags & TcpFlags::ACK != 0 && !outbound {
        b |= tcp::ESTABLISHED;
    }
    if flags & TcpFlags::FIN != 0 {
        b |= if outbound { tcp::FIN_OUT } else { tcp::FIN_IN };
    }
    b
}

/// Rewrites the source or destination port of the L4 header `p` (a
/// packet's, or the quote in an ICMP error: at least 8 bytes) and patches
/// its checksum for the port and the address change.
#[inline(always)]
fn rewrite_l4(p: &mut [u8], proto: u8, source: bool, old_port: u16, new_port: u16, old_ip: u32, new_ip: u32) {
    // The address is in the pseudo-header, the port in the header: one
    // patch of the transport checksum for both.
    let delta = Delta::default().word(old_port, new_port).dword(old_ip, new_ip);
    match proto {
        IpProtocol::TCP => {
            let has_checksum = p.len() >= TCP_CHECKSUM_END;
            let mut t = TcpPacket::new_unchecked(p);
            if source {
                t.set_src_port(new_port);
            } else {
                t.set_dst_port(new_port);
            }
            if has_checksum {
                t.patch_checksum(delta);
            }
        }
        IpProtocol::UDP => {
            let mut u = UdpPacket::new_unchecked(p);
            if source {
                u.set_src_port(new_port);
            } else {
                u.set_dst_port(new_port);
            }
            u.patch_checksum(delta);
        }
        _ => {
            // ICMP's checksum covers no pseudo-header: only the identifier.
            IcmpPacket::new_unchecked(p).rewrite_echo_ident(new_port);
        }
    }
}

/// Session record (version 2): slot 4 | proto 1 | inside ip 4 | inside
/// port 2 | remote ip 4 | remote port 2 | ext port 2 | tcp 1 | last_ns 8 |
/// live 1 = 29 bytes. A tombstone's slot is [`NO_SLOT`].
pub const SESSION_RECORD: usize = 29;
/// Version 1's record: the same without the slot.
pub const SESSION_RECORD_V1: usize = 25;
pub const NO_SLOT: u32 = u32::MAX;

fn put_session(out: &mut Vec<u8>, slot: u32, s: &Session, live: bool) {
    out.extend_from_slice(&slot.to_be_bytes());
    out.push(s.proto());
    out.extend_from_slice(&s.inside_ip.to_be_bytes());
    out.extend_from_slice(&s.inside_port.to_be_bytes());
    out.extend_from_slice(&s.remote_ip.to_be_bytes());
    out.extend_from_slice(&s.remote_port.to_be_bytes());
    out.extend_from_slice(&s.ext_port.to_be_bytes());
    out.push(s.tcp);
    out.extend_from_slice(&s.last_ns.to_be_bytes());
    out.push(live as u8);
}

/// A session record read back; None for a protocol the NAT keeps no
/// sessions of (a session's protocol is never 0: see [`Session`]).
fn get_session(r: &[u8]) -> Option<(Session, bool)> {
    if ![IpProtocol::ICMP, IpProtocol::TCP, IpProtocol::UDP].contains(&r[0]) {
        return None;
    }
    Some((
        Session {
            proto: NonZeroU8::new(r[0])?,
            inside_ip: get_u32(r, 1),
            inside_port: get_u16(r, 5),
            remote_ip: get_u32(r, 7),
            remote_port: get_u16(r, 11),
            ext_port: get_u16(r, 13),
            tcp: r[15],
            last_ns: get_u64(r, 16),
            gen: 0,
        },
        r[24] != 0,
    ))
}

impl SessionState for Nat {
    fn snapshot_chunk(&self, cursor: usize, max_records: usize, out: &mut Vec<u8>) -> Option<usize> {
        let at = begin_chunk(out, StateKind::NatSessions);
        let mut n = 0u32;
        let mut i = cursor;
        while i < self.slab.len() && (n as usize) < max_records {
            if let Some(s) = &self.slab[i] {
                put_session(out, i as u32, s, true);
                n += 1;
            }
            i += 1;
        }
        set_count(out, at, n);
        (i < self.slab.len()).then_some(i)
    }

    fn install_chunk(&mut self, chunk: &[u8]) -> Result<usize, StateError> {
        if chunk_kind(chunk) == Some(StateKind::NatLayout as u8) {
            return self.install_layout(chunk);
        }
        let (version, n, body) = open_chunk(chunk, StateKind::NatSessions, |v| {
            Some(if v == 1 { SESSION_RECORD_V1 } else { SESSION_RECORD })
        })?;
        let len = if version == 1 {
            SESSION_RECORD_V1
        } else {
            SESSION_RECORD
        };
        // Every record's index lines asked for first: a big table's misses
        // then overlap instead of stalling one record each.
        for r in body.chunks_exact(len) {
            if let Some((s, true)) = get_session(&r[len - SESSION_RECORD_V1..]) {
                self.out_map.prefetch(&s.out_key());
                self.in_map.prefetch(&s.in_key());
            }
        }
        for r in body.chunks_exact(len) {
            let (slot, r) = if version == 1 {
                (None, r)
            } else {
                (Some(get_u32(r, 0)), &r[4..])
            };
            let (mut s, live) = get_session(r).ok_or(StateError::Rejected)?;
            match slot {
                Some(slot) if live => self.place(slot, s)?,
                _ => {
                    // Checked before anything changes: a refused record
                    // leaves the session it would have replaced.
                    let existing = self.out_map.get(&s.out_key());
                    if live {
                        let clash = self.in_map.get(&s.in_key()).is_some_and(|j| Some(j) != existing);
                        let full = existing.is_none() && self.out_map.len() >= self.cfg.max_sessions;
                        if clash || full {
                            return Err(StateError::Rejected);
                        }
                    }
                    if let Some(i) = existing {
                        self.remove(i);
                    }
                    if live {
                        s.gen = self.next_gen();
                        self.insert(s);
                    }
                }
            }
        }
        Ok(n)
    }

    fn generation(&self) -> u64 {
        self.gen
    }

    fn layout_chunk(&self, out: &mut Vec<u8>) -> bool {
        let at = begin_chunk(out, StateKind::NatLayout);
        let free = self.free_slots();
        for v in [self.slab.len() as u32, self.sweep as u32]
            .into_iter()
            .chain(free.iter().copied())
        {
            out.extend_from_slice(&v.to_be_bytes());
        }
        set_count(out, at, 2 + free.len() as u32);
        true
    }

    fn changed_since(&self, generation: u64, out: &mut Vec<u8>) -> Option<usize> {
        if generation < self.deleted_floor {
            return None;
        }
        let at = begin_chunk(out, StateKind::NatSessions);
        let mut n = 0;
        for (g, key) in &self.deleted {
            if *g > generation && !self.out_map.contains_key(key) {
                let (proto, inside_ip, inside_port, remote_ip, remote_port) = key.parts();
                // A key's protocol is a session's: never 0.
                let Some(proto) = NonZeroU8::new(proto) else {
                    continue;
                };
                let tomb = Session {
                    proto,
                    inside_ip,
                    inside_port,
                    remote_ip,
                    remote_port,
                    ext_port: 0,
                    tcp: 0,
                    last_ns: 0,
                    gen: 0,
                };
                put_session(out, NO_SLOT, &tomb, false);
                n += 1;
            }
        }
        let mut put = |i: usize, s: &Option<Session>| {
            if let Some(s) = s.as_ref().filter(|s| s.gen > generation) {
                put_session(out, i as u32, s, true);
                n += 1;
            }
        };
        match self.changes.as_ref().filter(|log| generation >= log.from) {
            // Every session changed after `generation` changed after the
            // log began: it is listed.
            Some(log) => {
                for &i in &log.slots {
                    if let Some(s) = self.slab.get(i as usize) {
                        put(i as usize, s);
                    }
                }
            }
            None => {
                for (i, s) in self.slab.iter().enumerate() {
                    put(i, s);
                }
            }
        }
        set_count(out, at, n as u32);
        Some(n)
    }

    fn changed_since_chunks(&self, generation: u64, max_records: usize, out: &mut Vec<Vec<u8>>) -> Option<usize> {
        let mut whole = Vec::new();
        let n = self.changed_since(generation, &mut whole)?;
        split_records(&whole, SESSION_RECORD, max_records, out);
        Some(n)
    }

    fn digest(&self, slice: u32, of: u32) -> u64 {
        let of = of.max(1) as u64;
        // XOR of per-session hashes: independent of slab order (a slot
        // out of place shows in the next sessions' ports and expiries).
        self.sessions()
            .filter(|s| fx(&s.out_key()) % of == slice as u64)
            .fold(0u64, |d, s| {
                let mut rec = Vec::with_capacity(SESSION_RECORD);
                put_session(&mut rec, NO_SLOT, s, true);
                d ^ fx(&rec)
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NAT_IP: u32 = 0x0a0a_0201; // 10.10.2.1
    const REMOTE: u32 = 0x0a0a_0202;

    /// NAT to NAT_IP over ports 1024-65535, default timeouts.
    fn config(max_sessions: usize) -> NatConfig {
        NatConfig {
            address: NAT_IP,
            port_lo: 1024,
            port_hi: 65535,
            max_sessions,
            timeouts: Timeouts::default(),
        }
    }

    #[test]
    fn a_delta_from_before_more_deletions_than_the_log_holds_is_refused() {
        let n = DELETED_LOG + 1;
        let mut nat = Nat::new(config(n));
        let chunk = |live: bool| {
            let mut c = Vec::new();
            let at = begin_chunk(&mut c, StateKind::NatSessions);
            for i in 0..n as u32 {
                let s = Session {
                    proto: NonZeroU8::new(IpProtocol::UDP).unwrap(),
                    inside_ip: 0x0a0a_0000 + i,
                    inside_port: 5000,
                    remote_ip: REMOTE,
                    remote_port: 1 + (i / 60_000) as u16,
                    ext_port: 1024 + (i % 60_000) as u16,
                    tcp: 0,
                    last_ns: 0,
                    gen: 0,
                };
                put_session(&mut c, if live { i } else { NO_SLOT }, &s, live);
            }
            set_count(&mut c, at, n as u32);
            c
        };
        let before = nat.generation();
        assert_eq!(nat.install_chunk(&chunk(true)), Ok(n));
        let created = nat.generation();
        assert_eq!(nat.install_chunk(&chunk(false)), Ok(n));
        assert_eq!(nat.len(), 0);
        let mut out = Vec::new();
        assert_eq!(nat.changed_since(before, &mut out), None);
        assert_eq!(
            nat.changed_since(created, &mut out),
            None,
            "its first deletion left the log"
        );
        assert!(out.is_empty(), "nothing appended");
        // From the first deletion on, the log holds every one.
        assert_eq!(nat.changed_since(created + 1, &mut out), Some(DELETED_LOG));
    }

    #[test]
    fn inside_hosts_spread_over_every_shard_whatever_their_low_address_bits() {
        for shards in [1u16, 2, 3, 4, 8] {
            let n = Nat::new(config(16)).for_shard(0, shards);
            for stride in [1u32, 2, 4, 8] {
                let mut count = vec![0u32; shards as usize];
                for h in 1..=64u32 {
                    count[n.shard_of_inside(0x0a0a_0100 + h * stride) as usize] += 1;
                }
                assert!(
                    count.iter().all(|c| *c >= 64 / shards as u32 / 3),
                    "{shards} shards, hosts {stride} apart: {count:?}"
                );
            }
        }
    }

    fn nat_with_udp_session() -> Nat {
        let mut nat = Nat::new(config(16));
        assert_eq!(nat.outbound(&mut udp_out(50000), 1), Ok(()));
        nat
    }

    /// An inside host's UDP packet from `port` to REMOTE:9000.
    fn udp_out(port: u16) -> Vec<u8> {
        let mut p = vec![0u8; 40];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&40u16.to_be_bytes());
        p[8] = 64;
        p[9] = IpProtocol::UDP;
        p[12..16].copy_from_slice(&0x0a0a_0102u32.to_be_bytes());
        p[16..20].copy_from_slice(&REMOTE.to_be_bytes());
        p[20..22].copy_from_slice(&port.to_be_bytes());
        p[22..24].copy_from_slice(&9000u16.to_be_bytes());
        p[24..26].copy_from_slice(&20u16.to_be_bytes());
        p
    }

    /// A NAT over ports 1024-2047 only.
    fn nat_of_1024_ports() -> Nat {
        Nat::new(NatConfig {
            port_hi: 2047,
            ..config(4096)
        })
    }

    #[test]
    fn a_destination_whose_ports_are_all_taken_costs_a_new_flow_a_bounded_search() {
        let mut nat = nat_of_1024_ports();
        // Every port of the block, each kept by its own inside port.
        for port in 1024..=2047u16 {
            assert_eq!(nat.outbound(&mut udp_out(port), 1), Ok(()));
        }
        assert_eq!(nat.port_probes, 1024, "one look each: preserved");
        assert_eq!(nat.outbound(&mut udp_out(40000), 2), Err(DropReason::PortsExhausted));
        assert_eq!(nat.port_probes, 1024 + PORT_PROBES as u64);
        // Its own port taken too: one look more.
        nat.remove(0);
        assert_eq!(nat.outbound(&mut udp_out(1024), 3), Ok(()), "freed, preserved again");
        let probes = nat.port_probes;
        let mut out = udp_out(30000);
        assert_eq!(nat.outbound(&mut out, 4), Err(DropReason::PortsExhausted));
        assert_eq!(nat.port_probes - probes, PORT_PROBES as u64);
        assert_eq!(out, udp_out(30000), "a refused packet is not written");
    }

    #[test]
    fn a_destination_nine_tenths_taken_still_has_a_port_for_every_new_flow() {
        let mut nat = nat_of_1024_ports();
        let mut ports = std::collections::BTreeSet::new();
        for i in 0..922u16 {
            let mut p = udp_out(30000 + i);
            assert_eq!(nat.outbound(&mut p, 1), Ok(()), "flow {i}");
            ports.insert(u16::from_be_bytes([p[20], p[21]]));
        }
        assert_eq!(ports.len(), 922);
        assert!(ports.iter().all(|p| (1024..=2047).contains(p)));
        // On average a handful of looks, not a walk along taken ports.
        assert!(nat.port_probes < 922 * 4, "{} looks", nat.port_probes);
    }

    #[test]
    fn the_port_search_stride_visits_every_port_of_the_block() {
        for size in [1u32, 2, 3, 10, 64, 1000, 1024, 21504, 64512] {
            for seed in [0u32, 1, 7, 12345, u32::MAX] {
                let step = coprime_stride(seed, size);
                let mut seen = vec![false; size as usize];
                let mut at = seed % size;
                for _ in 0..size {
                    seen[at as usize] = true;
                    at = (at + step) % size;
                }
                assert!(seen.iter().all(|s| *s), "size {size} seed {seed} step {step}");
            }
        }
    }

    /// Made for its `max_sessions` up front, a NAT creates them all without
    /// a table growing, and translates every packet exactly as one whose
    /// tables grew (the ports it picks do not depend on the layout).
    #[test]
    fn a_preallocated_nat_never_grows_and_translates_as_a_grown_one() {
        let mut pre = Nat::new(config(3000)).preallocated().expect("300 KB");
        let sizes = |n: &Nat| (n.out_map.bytes(), n.in_map.bytes(), n.slab.capacity());
        let before = sizes(&pre);
        assert!(before.2 >= 3000);
        let mut grown = Nat::new(config(3000));
        for port in 0..3000u16 {
            let (mut a, mut b) = (udp_out(20000 + port), udp_out(20000 + port));
            assert_eq!(pre.outbound(&mut a, 1 + port as u64), Ok(()));
            assert_eq!(grown.outbound(&mut b, 1 + port as u64), Ok(()));
            assert_eq!(a, b, "packet {port} translated alike");
        }
        assert_eq!((pre.len(), sizes(&pre)), (3000, before), "no table grew");
        // 8 to 2048 buckets of 3 keys, 8 to 1024 of 4: 8 + 7 growths.
        assert_eq!((pre.index_growths(), grown.index_growths()), (0, 15));
        assert!(sizes(&grown).0 > 8 * 64, "the other one grew");
    }

    /// Sessions timing out as new ones come, 10 times the population:
    /// the sweep frees one for each created, and no index is rebuilt once
    /// grown to the population (a deletion leaves no mark behind that a
    /// rebuild must clear; the inside index here runs 73% full).
    #[test]
    fn churn_at_a_steady_population_never_grows_an_index() {
        let mut nat = Nat::new(config(3000));
        let t = Timeouts::default();
        for port in 0..3000u16 {
            assert_eq!(nat.outbound(&mut udp_out(20000 + port), 1), Ok(()));
        }
        // Each round of 3000 comes a UDP timeout after the last: the sweep
        // finds every session of the round before timed out.
        let round = |nat: &mut Nat, round: u64| {
            for port in 0..3000u16 {
                let src = if round % 2 == 1 { 40000 } else { 20000 } + port;
                let now = 1 + round * (t.udp + 1) + port as u64;
                assert_eq!(
                    nat.outbound(&mut udp_out(src), now),
                    Ok(()),
                    "round {round} port {port}"
                );
            }
        };
        // The first round ends the last growth (its keys still moving).
        round(&mut nat, 1);
        let (sizes, growths) = ((nat.out_map.bytes(), nat.in_map.bytes()), nat.index_growths());
        assert_eq!(sizes, (2048 * 64, 1024 * 64));
        for r in 2..=10 {
            round(&mut nat, r);
        }
        assert_eq!((nat.len(), nat.created, nat.expired), (3000, 33_000, 30_000));
        assert_eq!((nat.out_map.bytes(), nat.in_map.bytes()), sizes);
        assert_eq!(nat.index_growths(), growths);
    }

    #[test]
    fn the_prefetch_passes_find_the_session_each_direction_translates_with() {
        let mut nat = nat_with_udp_session();
        let out = udp_out(50000);
        let idx = nat.prefetch_target(&out, Side::Inside);
        assert_eq!(idx, Some(0));
        // The reply, as it arrives: REMOTE:9000 -> NAT_IP:<external port>.
        let mut p = out.clone();
        assert_eq!(nat.outbound(&mut p, 2), Ok(()));
        let ext = get_u16(&p[20..], 0);
        let mut reply = p.clone();
        reply[12..16].copy_from_slice(&REMOTE.to_be_bytes());
        reply[16..20].copy_from_slice(&NAT_IP.to_be_bytes());
        reply[20..22].copy_from_slice(&9000u16.to_be_bytes());
        reply[22..24].copy_from_slice(&ext.to_be_bytes());
        assert_eq!(nat.prefetch_target(&reply, Side::Outside), Some(0));
        assert_eq!(
            nat.prefetch_target(&udp_out(50001), Side::Inside),
            None,
            "no such session"
        );
        assert_eq!(nat.prefetch_target(&reply, Side::Inside), None, "wrong direction");
        // Truncated: nothing found, nothing read past the end.
        for len in 0..out.len() {
            // The ports end at byte 24; the key is read once 28 are there.
            let want = if len >= 28 { Some(0) } else { None };
            assert_eq!(nat.prefetch_target(&out[..len], Side::Inside), want, "{len} bytes");
            for stage in 0..2 {
                nat.prefetch(&out[..len], Side::Inside, stage);
                nat.prefetch(&reply[..len], Side::Outside, stage);
            }
        }
    }

    #[test]
    fn prefetching_turns_on_once_the_tables_outgrow_the_cache() {
        let mut nat = Nat::new(config(200_000));
        assert_eq!(nat.prefetch_stages(), 0);
        let mut created = 0;
        for remote in 0..2u32 {
            for port in 1024..=65535u16 {
                let mut p = udp_out(port);
                p[16..20].copy_from_slice(&(REMOTE + remote).to_be_bytes());
                assert_eq!(nat.outbound(&mut p, 1), Ok(()));
                created += 1;
                if created == 1000 {
                    assert_eq!(nat.prefetch_stages(), 0, "1 000 sessions fit in the cache");
                }
            }
        }
        assert_eq!(nat.len(), 129_024);
        assert_eq!(nat.prefetch_stages(), 2);
    }

    /// An inbound ICMP error (outer header without options, checksum
    /// valid) quoting `quote`.
    fn icmp_error(quote: &[u8]) -> Vec<u8> {
        let total = 20 + 8 + quote.len();
        let mut p = vec![0u8; total];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        p[8] = 64;
        p[9] = IpProtocol::ICMP;
        p[12..16].copy_from_slice(&0x0a0a_02feu32.to_be_bytes());
        p[16..20].copy_from_slice(&NAT_IP.to_be_bytes());
        let c = checksum::checksum(&p[..20]);
        p[10..12].copy_from_slice(&c.to_be_bytes());
        p[20] = IcmpType::DEST_UNREACHABLE;
        p[21] = 4;
        p[28..].copy_from_slice(quote);
        let c = checksum::checksum(&p[20..]);
        p[22..24].copy_from_slice(&c.to_be_bytes());
        p
    }

    /// Every quoted header length and quote length, for UDP, TCP and ICMP:
    /// a translation or a counted drop, never a panic, and no write past
    /// the rewrite span.
    #[test]
    fn icmp_errors_with_any_quote_shape_are_translated_or_dropped_within_the_span() {
        let mut translated = 0;
        for proto in [IpProtocol::UDP, IpProtocol::TCP, IpProtocol::ICMP] {
            for ihl in 0..16u8 {
                for len in 0..90usize {
                    let mut nat = nat_with_udp_session();
                    let mut q = vec![0u8; len];
                    if len > 20 {
                        q[0] = 0x40 | ihl;
                        q[9] = proto;
                        q[12..16].copy_from_slice(&NAT_IP.to_be_bytes());
                        q[16..20].copy_from_slice(&REMOTE.to_be_bytes());
                        let l4 = (ihl as usize * 4).min(len);
                        if len >= l4 + 4 {
                            q[l4..l4 + 2].copy_from_slice(&50000u16.to_be_bytes());
                            q[l4 + 2..l4 + 4].copy_from_slice(&9000u16.to_be_bytes());
                        }
                    }
                    let before = icmp_error(&q);
                    let mut p = before.clone();
                    match nat.inbound(&mut p, 2) {
                        Ok(dst) => {
                            translated += 1;
                            assert_eq!(dst, 0x0a0a_0102);
                            assert_eq!(proto, IpProtocol::UDP, "only the UDP session matches");
                            // Quoted options are fine while the ports stay in the span.
                            assert!((5..=11).contains(&ihl), "ihl {ihl}");
                            assert_eq!(checksum::checksum(&p[20..]), 0, "the error's checksum verifies");
                        }
                        Err(r) => assert_eq!(p, before, "a dropped error is left as it came ({r:?})"),
                    }
                    assert_eq!(p[IP_SPAN.min(p.len())..], before[IP_SPAN.min(before.len())..]);
                }
            }
        }
        // UDP with IHL 5..=11 (the quoted ports and checksum within the
        // span), quotes from the header + 8 bytes up to 89 bytes.
        let expect: usize = (5..=11).map(|ihl| 90 - (4 * ihl + 8)).sum();
        assert_eq!(translated, expect);
    }
}
