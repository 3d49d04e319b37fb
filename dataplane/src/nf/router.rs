//! `router` (and, with a NAT, `nat`): IPv4 forwarding between the two data
//! ports of the node, as the gateway of both segments.
//!
//! Per frame: ARP for the interface addresses is answered from the virtual
//! MAC and teaches the neighbour table; IPv4 is checked (lengths, header
//! checksum), TTL-checked (ICMP time exceeded), NAT-translated when a NAT is
//! configured (inside to outside: source; outside to the NAT address:
//! destination), routed by longest-prefix match (ICMP destination
//! unreachable when no route), and sent to the next hop's MAC with TTL
//! decremented and the checksum patched (RFC 1624). An unknown next hop gets
//! an ARP request in place of the packet, which waits ([`super::hold`]) and
//! leaves in place of the ARP packet that answers. ICMP errors and ARP requests are
//! rate-limited on replicated time. Echo requests to the interface
//! addresses are answered.
//!
//! Everything is rewritten in place inside [`Router::REWRITE_SPAN`] bytes
//! (or grown into the headroom for ICMP errors), so the replica of the
//! frame, which shares the rest of the buffer, stays as received.

use std::net::Ipv4Addr;
use std::sync::Arc;

use super::nat::{Nat, NatConfig};
use super::neighbor::Neighbors;
use super::route::{mask, Route, RouteLookup};
use super::state::{chunk_kind, SessionState, StateError, StateKind};
use super::transient::Transient;
use super::{DropReason, NetworkFunction, Owner, PacketCtx, Side, Verdict};
use crate::frame::Frame;
use crate::wire::arp::{ArpOp, ArpPacket, PACKET_LEN as ARP_LEN};
use crate::wire::checksum;
use crate::wire::ethernet::{EtherType, EthernetFrame, HEADER_LEN as ETH_LEN};
use crate::wire::icmp::{IcmpPacket, IcmpType};
use crate::wire::ipv4::{IpProtocol, Ipv4Packet, MIN_HEADER_LEN};
use crate::wire::{MacAddr, WireError};

/// Next hops that may each have a packet waiting for their MAC.
const HOLD_MAX: usize = 256;

/// What the fast path reads: Ethernet and an IPv4 header without options.
const FAST_SPAN: usize = ETH_LEN + MIN_HEADER_LEN;

/// The router's static configuration (shared by every shard).
#[derive(Clone, Debug)]
pub struct RouterConfig {
    pub vmac: MacAddr,
    /// Interface address and prefix length per side (the virtual IPs).
    pub addr: [Ipv4Addr; 2],
    pub prefix_len: [u8; 2],
    /// Every route, the connected ones included (see [`RouterConfig::all_routes`]).
    pub routes: Vec<Route>,
    /// ICMP errors per second.
    pub icmp_rate: u32,
    /// ARP requests per second per shard.
    pub arp_rate: u32,
    pub max_neighbors: usize,
    /// Neighbours configured rather than learned.
    pub static_neighbors: Vec<(Ipv4Addr, MacAddr, Side)>,
    pub nat: Option<NatConfig>,
}

impl RouterConfig {
    /// The configured routes plus one connected route per interface.
    pub fn all_routes(addr: [Ipv4Addr; 2], prefix_len: [u8; 2], configured: &[Route]) -> Vec<Route> {
        let mut v: Vec<Route> = Side::ALL
            .iter()
            .map(|s| Route {
                prefix: Ipv4Addr::from(u32::from(addr[s.index()]) & mask(prefix_len[s.index()])),
                len: prefix_len[s.index()],
                side: *s,
                via: None,
            })
            .collect();
        v.extend_from_slice(configured);
        v
    }

    fn on_link(&self, side: Side, ip: u32) -> bool {
        let m = mask(self.prefix_len[side.index()]);
        ip & m == u32::from(self.addr[side.index()]) & m
    }
}

/// ICMP header + quoted IP header and 8 bytes: what an error adds in front.
const ICMP_ERR_PREFIX: usize = 20 + 8;

pub struct Router<L: RouteLookup> {
    cfg: Arc<RouterConfig>,
    lpm: Arc<L>,
    pub neighbors: Neighbors,
    nat: Option<Nat>,
    /// The rate limiters, and the packets waiting for their next hop's MAC.
    pub transient: Transient,
    /// The interface addresses as integers (compared per packet).
    addr: [u32; 2],
    /// The virtual MAC as the low 48 bits of a little-endian word: one
    /// compare against a frame's first 8 bytes.
    vmac_word: u64,
    /// How many shards the node runs (steering is asked of the function
    /// only when more than one).
    shards: u16,
}

impl<L: RouteLookup> Router<L> {
    /// Ethernet + what the NAT may rewrite: the longest IPv4 header and the
    /// first 20 bytes of TCP (ports and checksum), or an ICMP error's quote.
    pub const REWRITE_SPAN: usize = ETH_LEN + super::nat::IP_SPAN;

    /// The neighbour table as configured: the static neighbours only.
    fn configured_neighbors(cfg: &RouterConfig) -> Neighbors {
        let mut neighbors = Neighbors::new(cfg.max_neighbors);
        for (ip, mac, side) in &cfg.static_neighbors {
            // Confirmed at the end of time: the last to be evicted.
            neighbors.learn(u32::from(*ip), *mac, *side, u64::MAX);
        }
        neighbors
    }

    pub fn new(cfg: Arc<RouterConfig>, lpm: Arc<L>) -> Router<L> {
        Router {
            neighbors: Self::configured_neighbors(&cfg),
            nat: cfg.nat.map(Nat::new),
            transient: Transient::new(cfg.icmp_rate, cfg.arp_rate, HOLD_MAX),
            addr: cfg.addr.map(u32::from),
            vmac_word: {
                let mut w = [0u8; 8];
                w[..6].copy_from_slice(&cfg.vmac.0);
                u64::from_le_bytes(w)
            },
            cfg,
            lpm,
            shards: 1,
        }
    }

    /// The router of shard `shard` of `shards`: its NAT allocates from the
    /// shard's block of external ports.
    pub fn for_shard(mut self, shard: u16, shards: u16) -> Router<L> {
        self.shards = shards.max(1);
        self.nat = self.nat.take().map(|n| n.for_shard(shard, shards));
        self
    }

    pub fn nat(&self) -> Option<&Nat> {
        self.nat.as_ref()
    }

    /// With a NAT: its tables made for `max_sessions` up front
    /// ([`Nat::preallocated`]); an error when the memory cannot be had.
    pub fn with_preallocated_sessions(mut self) -> Result<Router<L>, String> {
        self.nat = self.nat.take().map(Nat::preallocated).transpose()?;
        Ok(self)
    }

    pub fn nat_mut(&mut self) -> Option<&mut Nat> {
        self.nat.as_mut()
    }

    fn arp_in(&mut self, frame: &mut Frame<'_>, ctx: &PacketCtx) -> Verdict {
        let side = ctx.ingress;
        let our = u32::from(self.cfg.addr[side.index()]);
        let (op, sha, spa, tpa) = {
            let Some(body) = frame.data().get(ETH_LEN..) else {
                return Verdict::Drop(DropReason::Truncated);
            };
            match ArpPacket::new_checked(body) {
                Ok(a) => (
                    a.operation(),
                    a.sender_mac(),
                    u32::from(a.sender_ip()),
                    u32::from(a.target_ip()),
                ),
                Err(WireError::Truncated) => return Verdict::Drop(DropReason::Truncated),
                Err(_) => return Verdict::Drop(DropReason::Malformed),
            }
        };
        let for_us = tpa == our;
        if self.cfg.on_link(side, spa) && spa != our && !sha.is_multicast() && (for_us || self.neighbors.contains(spa))
        {
            self.neighbors.learn(spa, sha, side, ctx.now_ns);
        }
        let to_answer = !ctx.copy && for_us && op == ArpOp::REQUEST;
        if !to_answer {
            // What waited for this neighbour leaves in this frame's place.
            if let Some(v) = self.release(frame, spa, side, ctx.now_ns) {
                return v;
            }
        }
        if ctx.copy {
            // Another shard received it and answers it; this one learned.
            return Verdict::Consumed;
        }
        if !for_us {
            return Verdict::Drop(DropReason::NotForUs);
        }
        if op != ArpOp::REQUEST {
            return Verdict::Consumed;
        }
        // The reply, in place of the request.
        let vmac = self.cfg.vmac;
        let d = frame.data_mut();
        let mut eth = EthernetFrame::new_unchecked(&mut d[..]);
        eth.set_dst(sha);
        eth.set_src(vmac);
        ArpPacket::new_unchecked(&mut d[ETH_LEN..ETH_LEN + ARP_LEN]).emit(
            ArpOp::REPLY,
            vmac,
            Ipv4Addr::from(our),
            sha,
            Ipv4Addr::from(spa),
        );
        Verdict::Forward(side)
    }

    /// Turns the frame into an ARP request for `ip` on `side`. `held`: the
    /// packet it carried waits for the answer (not a drop).
    fn arp_request(&mut self, frame: &mut Frame<'_>, side: Side, ip: u32, now: u64, held: bool) -> Verdict {
        let unsent = if held {
            Verdict::Consumed
        } else {
            Verdict::Drop(DropReason::ArpPending)
        };
        if !self.transient.take_arp(now) {
            return unsent;
        }
        let want = 60;
        if frame.len() < want && !frame.append(want - frame.len()) {
            return unsent;
        }
        frame.truncate(want);
        let vmac = self.cfg.vmac;
        let our = self.cfg.addr[side.index()];
        let d = frame.data_mut();
        d[ETH_LEN + ARP_LEN..].fill(0);
        let mut eth = EthernetFrame::new_unchecked(&mut d[..]);
        eth.set_dst(MacAddr::BROADCAST);
        eth.set_src(vmac);
        eth.set_ethertype(EtherType::ARP);
        ArpPacket::new_unchecked(&mut d[ETH_LEN..ETH_LEN + ARP_LEN]).emit(
            ArpOp::REQUEST,
            vmac,
            our,
            MacAddr::ZERO,
            Ipv4Addr::from(ip),
        );
        if held {
            Verdict::Forward(side)
        } else {
            Verdict::Replaced {
                out: side,
                dropped: DropReason::ArpPending,
            }
        }
    }

    /// The frame (an ARP packet that taught this router `ip`'s MAC) becomes
    /// the packet held for `ip`, routed on. None when nothing is held, or
    /// the frame is longer than the rewrite span (the replica shares what
    /// lies beyond it; the packet then waits for the next ARP from `ip`).
    fn release(&mut self, frame: &mut Frame<'_>, ip: u32, side: Side, now: u64) -> Option<Verdict> {
        if self.transient.held().is_empty() || frame.len() > Self::REWRITE_SPAN {
            return None;
        }
        let mac = self.neighbors.get(ip, side)?;
        let bytes = self.transient.take_held(ip, side, now)?;
        let n = bytes.len();
        if n > frame.len() && !frame.append(n - frame.len()) {
            self.transient.count_unsent();
            return None;
        }
        frame.truncate(n);
        let d = frame.data_mut();
        d.copy_from_slice(&bytes);
        self.to_next_hop(d, mac);
        Some(Verdict::Forward(side))
    }

    /// The last step of routing an IPv4 frame: TTL down by one (checksum
    /// patched), from the virtual MAC to the next hop's `mac`.
    #[inline(always)]
    fn to_next_hop(&self, d: &mut [u8], mac: MacAddr) {
        Ipv4Packet::new_unchecked(&mut d[ETH_LEN..]).decrement_ttl();
        let mut eth = EthernetFrame::new_unchecked(d);
        eth.set_dst(mac);
        eth.set_src(self.cfg.vmac);
    }

    /// Turns the frame into an ICMP error about it, back out of the ingress
    /// port, or drops it when the error budget is spent.
    fn icmp_error(
        &mut self,
        frame: &mut Frame<'_>,
        ctx: &PacketCtx,
        icmp_type: u8,
        code: u8,
        reason: DropReason,
    ) -> Verdict {
        if !self.transient.take_icmp(ctx.now_ns) {
            return Verdict::Drop(DropReason::RateLimited);
        }
        let (prev_hop, orig_src, quote) = {
            let d = frame.data();
            let eth = EthernetFrame::new_unchecked(d);
            let ip = Ipv4Packet::new_unchecked(&d[ETH_LEN..]);
            (eth.src(), ip.src(), (ip.header_len() + 8).min(ip.total_len()))
        };
        // Never answer an error with an error, nor a broadcast source.
        if orig_src.is_broadcast() || orig_src.is_multicast() || orig_src.is_unspecified() {
            return Verdict::Drop(reason);
        }
        // The original IP header stays where it is and becomes the quote;
        // the new Ethernet, IP and ICMP headers grow into the headroom over
        // the old Ethernet header.
        if !frame.prepend(ICMP_ERR_PREFIX) {
            return Verdict::Drop(reason);
        }
        frame.truncate(ETH_LEN + ICMP_ERR_PREFIX + quote);
        let vmac = self.cfg.vmac;
        let our = self.cfg.addr[ctx.ingress.index()];
        let d = frame.data_mut();
        let mut eth = EthernetFrame::new_unchecked(&mut d[..]);
        eth.set_dst(prev_hop);
        eth.set_src(vmac);
        eth.set_ethertype(EtherType::IPV4);
        let total = (20 + 8 + quote) as u16;
        {
            let mut ip = Ipv4Packet::new_unchecked(&mut d[ETH_LEN..ETH_LEN + 20]);
            ip.set_version_and_header_len(20);
            ip.set_tos(0xc0);
            ip.set_total_len(total);
            ip.set_ident(0);
            ip.set_flags_frag_raw(0);
            ip.set_ttl(64);
            ip.set_protocol(IpProtocol::ICMP);
            ip.set_src(our);
            ip.set_dst(orig_src);
            ip.fill_checksum();
        }
        let mut icmp = IcmpPacket::new_unchecked(&mut d[ETH_LEN + 20..]);
        icmp.set_msg_type(icmp_type);
        icmp.set_code(code);
        icmp.set_unused();
        icmp.fill_checksum();
        Verdict::Replaced {
            out: ctx.ingress,
            dropped: reason,
        }
    }

    /// Answers an echo request to one of our addresses in place.
    fn local(&mut self, frame: &mut Frame<'_>, ctx: &PacketCtx) -> Verdict {
        let d = frame.data_mut();
        let (ihl, total) = {
            let ip = Ipv4Packet::new_unchecked(&d[ETH_LEN..]);
            if ip.protocol() != IpProtocol::ICMP || ip.is_fragment() {
                return Verdict::Drop(DropReason::NotForUs);
            }
            (ip.header_len(), ip.total_len())
        };
        let l4 = ETH_LEN + ihl..ETH_LEN + total;
        match IcmpPacket::new_checked(&d[l4.clone()]) {
            Ok(i) if i.msg_type() == IcmpType::ECHO_REQUEST && i.code() == 0 => {}
            Ok(_) => return Verdict::Drop(DropReason::NotForUs),
            Err(_) => return Verdict::Drop(DropReason::Truncated),
        }
        {
            let mut icmp = IcmpPacket::new_unchecked(&mut d[l4]);
            // Type 8 -> 0 changes the first 16-bit word of the message.
            icmp.set_msg_type(IcmpType::ECHO_REPLY);
            let c = checksum::update16(icmp.checksum(), (IcmpType::ECHO_REQUEST as u16) << 8, 0);
            icmp.set_checksum(c);
        }
        {
            let mut ip = Ipv4Packet::new_unchecked(&mut d[ETH_LEN..ETH_LEN + ihl]);
            let (src, dst) = (ip.src(), ip.dst());
            // Swapping two words leaves the one's-complement sum unchanged.
            ip.set_src(dst);
            ip.set_dst(src);
            let old = u16::from_be_bytes([ip.ttl(), ip.protocol()]);
            ip.set_ttl(64);
            let c = checksum::update16(ip.checksum(), old, u16::from_be_bytes([64, IpProtocol::ICMP]));
            ip.set_checksum(c);
        }
        let mut eth = EthernetFrame::new_unchecked(&mut d[..]);
        let peer = eth.src();
        eth.set_dst(peer);
        eth.set_src(self.cfg.vmac);
        Verdict::Forward(ctx.ingress)
    }

    /// The common case, decided on the first 34 bytes alone: IPv4 without
    /// options to the virtual MAC, checksum good (or vouched for by the
    /// NIC, [`PacketCtx::ip_checksum_ok`]), TTL > 1, not addressed to
    /// the router, routed to a known neighbour; with a NAT, UDP or TCP of a
    /// live session when translated ([`Nat::find_fast`]). None whenever any of
    /// that is not so, and nothing written: [`Router::ipv4_general`] decides
    /// (a test checks that both give the same verdict and bytes). The worker
    /// calls it first on every frame ([`NetworkFunction::fast`]), so it
    /// checks the EtherType itself, and reads the header with a handful of
    /// wide loads: per packet, instructions are what a router spends.
    #[inline(always)]
    fn ipv4_fast(&mut self, d: &mut [u8], ctx: &PacketCtx) -> Option<Side> {
        let frame_len = d.len();
        let h: &[u8; FAST_SPAN] = d.get(..FAST_SPAN)?.try_into().ok()?;
        let mac_lo = u64::from_le_bytes([h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7]]) & 0xffff_ffff_ffff;
        if mac_lo != self.vmac_word || [h[12], h[13], h[14]] != [0x08, 0x00, 0x45] {
            return None;
        }
        let total = u16::from_be_bytes([h[16], h[17]]) as usize;
        if total < MIN_HEADER_LEN || ETH_LEN + total > frame_len || h[22] <= 1 {
            return None;
        }
        let ip: &[u8; MIN_HEADER_LEN] = h[ETH_LEN..].try_into().ok()?;
        if !ctx.ip_checksum_ok && !checksum::header20_verifies(ip) {
            return None;
        }
        let mut dst = u32::from_be_bytes([h[30], h[31], h[32], h[33]]);
        // With a NAT: a reply to the NAT address is translated first and
        // routed to its inside host; what leaves inside is translated if its
        // route goes outside (the general path's order). Its session is
        // looked up before the route: a new flow, which the general path
        // creates, is declined without a route lookup done twice.
        let (mut hit, mut inbound) = (None, false);
        if let Some(nat) = self.nat.as_ref() {
            let ip = &d[ETH_LEN..ETH_LEN + total];
            if ctx.ingress == Side::Outside && dst == nat.config().address {
                let found = nat.find_fast(ip, Side::Outside, ctx.now_ns)?;
                (dst, hit, inbound) = (found.dst, Some(found), true);
            } else if ctx.ingress == Side::Inside {
                hit = Some(nat.find_fast(ip, Side::Inside, ctx.now_ns)?);
            }
        }
        if !inbound && self.addr.contains(&dst) {
            return None;
        }
        let route = *self.cfg.routes.get(self.lpm.lookup(dst)? as usize)?;
        if !inbound && route.side == Side::Inside {
            // Inside to inside: routed, not translated.
            hit = None;
        }
        let mac = self
            .neighbors
            .get(route.via.map(u32::from).unwrap_or(dst), route.side)?;
        // Decided: from here on it is written.
        if let (Some(hit), Some(nat)) = (hit, self.nat.as_mut()) {
            nat.apply_fast(hit, &mut d[ETH_LEN..], ctx.now_ns);
        }
        self.to_next_hop(d, mac);
        Some(route.side)
    }

    fn ipv4_general(&mut self, frame: &mut Frame<'_>, ctx: &PacketCtx) -> Verdict {
        let (dst, ttl) = {
            let d = frame.data();
            if EthernetFrame::new_unchecked(d).dst() != self.cfg.vmac {
                return Verdict::Drop(DropReason::NotForUs);
            }
            let ip = match Ipv4Packet::new_checked(&d[ETH_LEN..]) {
                Ok(ip) => ip,
                Err(WireError::Truncated) => return Verdict::Drop(DropReason::Truncated),
                Err(_) => return Verdict::Drop(DropReason::Malformed),
            };
            // The NIC's word, when it verified it, is the same answer.
            if !ctx.ip_checksum_ok && !ip.verify_checksum() {
                return Verdict::Drop(DropReason::BadChecksum);
            }
            (ip.dst_u32(), ip.ttl())
        };
        let ingress = ctx.ingress;
        let outside_addr = u32::from(self.cfg.addr[Side::Outside.index()]);
        let mut dst = dst;
        let mut inbound_translated = false;
        if let Some(nat) = self.nat.as_mut() {
            if ingress == Side::Outside && dst == nat.config().address {
                match nat.inbound(&mut frame.data_mut()[ETH_LEN..], ctx.now_ns) {
                    Ok(inside) => {
                        dst = inside;
                        inbound_translated = true;
                    }
                    // No session: an echo request is for the router itself;
                    // anything else was not asked for.
                    Err(DropReason::NoSession) if dst == outside_addr => {
                        return match self.local(frame, ctx) {
                            Verdict::Drop(DropReason::NotForUs) => Verdict::Drop(DropReason::NoSession),
                            v => v,
                        };
                    }
                    Err(r) => return Verdict::Drop(r),
                }
            }
        }
        if !inbound_translated && self.addr.contains(&dst) {
            return self.local(frame, ctx);
        }
        if ttl <= 1 {
            return self.icmp_error(frame, ctx, IcmpType::TIME_EXCEEDED, 0, DropReason::TtlExpired);
        }
        let Some(route) = self
            .lpm
            .lookup(dst)
            .and_then(|i| self.cfg.routes.get(i as usize).copied())
        else {
            return self.icmp_error(frame, ctx, IcmpType::DEST_UNREACHABLE, 0, DropReason::NoRoute);
        };
        let out = route.side;
        if let Some(nat) = self.nat.as_mut() {
            if ingress == Side::Inside && out == Side::Outside {
                if let Err(r) = nat.outbound(&mut frame.data_mut()[ETH_LEN..], ctx.now_ns) {
                    return Verdict::Drop(r);
                }
            }
        }
        let next_hop = route.via.map(u32::from).unwrap_or(dst);
        let Some(mac) = self.neighbors.get(next_hop, out) else {
            let held = self.transient.hold(next_hop, out, frame.data(), ctx.now_ns);
            return self.arp_request(frame, out, next_hop, ctx.now_ns, held);
        };
        self.to_next_hop(frame.data_mut(), mac);
        Verdict::Forward(out)
    }
}

impl<L: RouteLookup> NetworkFunction for Router<L> {
    fn name(&self) -> &'static str {
        if self.nat.is_some() {
            "nat"
        } else {
            "router"
        }
    }

    fn rewrite_span(&self) -> usize {
        Self::REWRITE_SPAN
    }

    fn describe(&self, max: usize) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let _ = writeln!(out, "  neighbours: {}", self.neighbors.len());
        let _ = writeln!(
            out,
            "  held for their next hop: {} (sent after the answer {}, expired {})",
            self.transient.held().len(),
            self.transient.held().released,
            self.transient.held().expired
        );
        for (ip, n) in self.neighbors.sorted().iter().take(max) {
            let _ = writeln!(out, "    {:<15} {}  {}", Ipv4Addr::from(*ip), n.mac, n.side.name());
        }
        if let Some(nat) = &self.nat {
            let _ = writeln!(
                out,
                "  nat sessions: {} (created {}, expired {}; ports looked at {}; indexes grown {} times{})",
                nat.len(),
                nat.created,
                nat.expired,
                nat.port_probes,
                nat.index_growths(),
                if nat.is_preallocated() {
                    format!("; tables made for {}", nat.config().max_sessions)
                } else {
                    String::new()
                }
            );
            let proto = |p: u8| match p {
                IpProtocol::TCP => "tcp",
                IpProtocol::UDP => "udp",
                _ => "icmp",
            };
            for s in nat.sessions().take(max) {
                let _ = writeln!(
                    out,
                    "    {:<4} {}:{} -> {}:{}  via :{}  tcp-state {:#04x}  last {:.3} s",
                    proto(s.proto()),
                    Ipv4Addr::from(s.inside_ip),
                    s.inside_port,
                    Ipv4Addr::from(s.remote_ip),
                    s.remote_port,
                    s.ext_port,
                    s.tcp,
                    s.last_ns as f64 / 1e9
                );
            }
        }
        out
    }

    /// The NAT's slab slice, and (slice 0 only, they are small) the
    /// neighbours, the rate limiters and the held packets.
    fn audit_digest(&self, slice: u32, of: u32) -> u64 {
        use super::state::SessionState;
        let nat = self.nat.as_ref().map_or(0, |n| n.audit_digest(slice, of));
        let small = if slice == 0 {
            self.neighbors.digest(0, 1) ^ self.transient.digest(0, 1).rotate_left(29)
        } else {
            0
        };
        nat ^ small.rotate_left(17)
    }

    /// The neighbours, the rate limiters and held packets, then the NAT's
    /// sessions.
    fn state_tables(&self) -> Vec<&dyn SessionState> {
        let mut t: Vec<&dyn SessionState> = vec![&self.neighbors, &self.transient];
        if let Some(nat) = &self.nat {
            t.push(nat);
        }
        t
    }

    fn install_state(&mut self, chunk: &[u8]) -> Result<usize, StateError> {
        let kind = chunk_kind(chunk).unwrap_or(0);
        match (kind, self.nat.as_mut()) {
            (k, _) if k == StateKind::Neighbors as u8 => self.neighbors.install_chunk(chunk),
            (k, _) if k == StateKind::RouterTransient as u8 => self.transient.install_chunk(chunk),
            (k, Some(nat)) if k == StateKind::NatSessions as u8 || k == StateKind::NatLayout as u8 => {
                nat.install_chunk(chunk)
            }
            _ => Err(StateError::WrongKind(kind)),
        }
    }

    /// The NAT's sessions (the neighbours are few: scanned).
    fn track_changes(&mut self, on: bool) {
        if let Some(nat) = self.nat.as_mut() {
            nat.track_changes(on);
        }
    }

    /// Learned neighbours, sessions, the rate limiters' spending and the
    /// packets held for a next hop go; the static neighbours stay.
    fn clear_state(&mut self) {
        self.neighbors = Self::configured_neighbors(&self.cfg);
        if let Some(nat) = self.nat.as_mut() {
            nat.clear();
        }
        self.transient = Transient::new(self.cfg.icmp_rate, self.cfg.arp_rate, HOLD_MAX);
    }

    /// ARP teaches neighbours, which every shard needs: every shard sees
    /// it. With a NAT, what an inside host sends belongs to the shard of
    /// its address (its sessions, and its ICMP errors about them), and a
    /// reply to the NAT address to the shard whose block holds its port.
    fn owner(&self, frame: &[u8], ingress: Side) -> Owner {
        let Ok(eth) = EthernetFrame::new_checked(frame) else {
            return Owner::Here;
        };
        match eth.ethertype() {
            EtherType::ARP => Owner::Every,
            EtherType::IPV4 => {
                let Some(nat) = self.nat.as_ref() else {
                    return Owner::Here;
                };
                let ip = &frame[ETH_LEN..];
                match ingress {
                    Side::Outside => nat.owner_of_inbound(ip).map_or(Owner::Here, Owner::Shard),
                    Side::Inside => match Ipv4Packet::new_checked(ip) {
                        Ok(p) => Owner::Shard(nat.shard_of_inside(p.src_u32())),
                        Err(_) => Owner::Here,
                    },
                }
            }
            _ => Owner::Here,
        }
    }

    #[inline]
    fn prefetch_stages(&self) -> usize {
        self.nat.as_ref().map_or(0, Nat::prefetch_stages)
    }

    #[inline]
    fn prefetch(&self, frame: &[u8], ingress: Side, stage: usize) {
        if let (Some(nat), Some(ip)) = (self.nat.as_ref(), frame.get(ETH_LEN..)) {
            nat.prefetch(ip, ingress, stage);
        }
    }

    #[inline(always)]
    fn fast(&mut self, data: &mut [u8], ctx: &PacketCtx) -> Option<Side> {
        self.ipv4_fast(data, ctx)
    }

    #[inline]
    fn process(&mut self, frame: &mut Frame<'_>, ctx: &PacketCtx) -> Verdict {
        if let Some(out) = self.ipv4_fast(frame.data_mut(), ctx) {
            return Verdict::Forward(out);
        }
        self.process_general(frame, ctx)
    }

    /// `process` without the fast path: also what the fast path must agree
    /// with, verdict, bytes and state (the tests and the `nat_router` fuzz
    /// target hold it to that).
    fn process_general(&mut self, frame: &mut Frame<'_>, ctx: &PacketCtx) -> Verdict {
        let ethertype = match EthernetFrame::new_checked(frame.data()) {
            Ok(e) => e.ethertype(),
            Err(_) => return Verdict::Drop(DropReason::Truncated),
        };
        match ethertype {
            EtherType::IPV4 => self.ipv4_general(frame, ctx),
            EtherType::ARP => self.arp_in(frame, ctx),
            _ => Verdict::Drop(DropReason::NotIpv4),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::OwnedFrame;
    use crate::fuzzing::Corpus;
    use crate::nf::route::RustLpm;

    fn router() -> Router<RustLpm> {
        router_with(None, vec![])
    }

    fn router_with(nat: Option<NatConfig>, more_neighbors: Vec<(Ipv4Addr, MacAddr, Side)>) -> Router<RustLpm> {
        let addr = [Ipv4Addr::new(10, 10, 1, 1), Ipv4Addr::new(10, 10, 2, 1)];
        let default = Route {
            prefix: Ipv4Addr::UNSPECIFIED,
            len: 0,
            side: Side::Outside,
            via: Some(Ipv4Addr::new(10, 10, 2, 254)),
        };
        let cfg = Arc::new(RouterConfig {
            vmac: MacAddr([2, 0, 0x5e, 0, 1, 1]),
            addr,
            prefix_len: [24, 24],
            routes: RouterConfig::all_routes(addr, [24, 24], &[default]),
            icmp_rate: 1_000_000,
            arp_rate: 1_000_000,
            max_neighbors: 16,
            static_neighbors: vec![
                (Ipv4Addr::new(10, 10, 2, 2), MacAddr([2, 0, 0, 0, 2, 2]), Side::Outside),
                (Ipv4Addr::new(10, 10, 1, 2), MacAddr([2, 0, 0, 0, 1, 2]), Side::Inside),
                (
                    Ipv4Addr::new(10, 10, 2, 254),
                    MacAddr([2, 0, 0, 0, 2, 0xfe]),
                    Side::Outside,
                ),
            ]
            .into_iter()
            .chain(more_neighbors)
            .collect(),
            nat,
        });
        let lpm = Arc::new(RustLpm::new(&cfg.routes));
        Router::new(cfg, lpm)
    }

    /// A UDP frame to the virtual MAC, header checksum filled.
    fn udp(src: [u8; 4], dst: [u8; 4], ttl: u8) -> Vec<u8> {
        let mut f = vec![0u8; 60];
        f[0..6].copy_from_slice(&[2, 0, 0x5e, 0, 1, 1]);
        f[6..12].copy_from_slice(&[2, 0, 0, 0, 1, 2]);
        f[12..14].copy_from_slice(&[8, 0]);
        f[14] = 0x45;
        f[16..18].copy_from_slice(&46u16.to_be_bytes());
        f[22] = ttl;
        f[23] = IpProtocol::UDP;
        f[26..30].copy_from_slice(&src);
        f[30..34].copy_from_slice(&dst);
        let c = checksum::checksum(&f[14..34]);
        f[24..26].copy_from_slice(&c.to_be_bytes());
        f
    }

    /// The fast path either declines without writing a byte, or gives the
    /// verdict and the bytes the general path gives, over valid frames to
    /// every kind of destination and TTL and over mangled ones.
    #[test]
    fn the_fast_path_agrees_with_the_general_path_or_declines_untouched() {
        let (mut fast, mut general) = (router(), router());
        let mut c = Corpus::new(0x0fa5_7a7b);
        let dsts = [
            [10, 10, 2, 2],
            [10, 10, 1, 2],
            [10, 10, 2, 9],
            [8, 8, 8, 8],
            [10, 10, 1, 1],
            [10, 10, 2, 1],
        ];
        let mut taken = 0;
        for i in 0..60_000u64 {
            let base = udp([10, 10, 1, 2], dsts[(i % 6) as usize], (i / 6 % 4) as u8);
            let bytes = if i % 3 == 0 { c.frame(&base) } else { base };
            let ctx = PacketCtx::new(if i % 2 == 0 { Side::Inside } else { Side::Outside }, i * 1000);
            let mut a = bytes.clone();
            match fast.ipv4_fast(&mut a, &ctx) {
                None => assert_eq!(a, bytes, "declined, yet wrote: {bytes:02x?}"),
                Some(out) => {
                    taken += 1;
                    let mut b = OwnedFrame::from_bytes(&bytes);
                    let w = b.with_frame(|f| general.ipv4_general(f, &ctx));
                    assert_eq!((Verdict::Forward(out), a.as_slice()), (w, b.data()), "{bytes:02x?}");
                }
            }
        }
        // Unmangled to 10.10.1.2 with TTL 2 or 3 (5 000), and the mangled
        // frames to 10.10.2.2 or via 10.10.2.254 whose mangling spared what
        // the fast path reads (4 957 of 10 000 with this seed).
        assert!(taken >= 9_000, "the fast path was exercised ({taken})");
    }

    /// A NAT router's traffic both ways — new and known UDP and TCP
    /// sessions, every TCP flag, replies to the NAT address, sessions
    /// expiring, fragments, ICMP, unknown next hops, mangled L4 headers —
    /// through the fast path then the general one (as the worker runs
    /// them), and through the general path alone: the same verdicts, the
    /// same bytes, the same sessions with the same generations.
    #[test]
    fn with_a_nat_the_fast_path_changes_state_exactly_as_the_general_path() {
        use super::super::nat::Timeouts;
        let nat = NatConfig {
            address: u32::from(Ipv4Addr::new(10, 10, 2, 1)),
            port_lo: 1024,
            port_hi: 1100,
            max_sessions: 150,
            timeouts: Timeouts {
                tcp_established: 4_000_000_000,
                tcp_transitory: 1_000_000_000,
                tcp_reset: 300_000_000,
                udp: 2_000_000_000,
                icmp: 1_000_000_000,
            },
        };
        let inside: Vec<_> = (3..9u8)
            .map(|h| (Ipv4Addr::new(10, 10, 1, h), MacAddr([2, 0, 0, 0, 1, h]), Side::Inside))
            .collect();
        let (mut both, mut general) = (router_with(Some(nat), inside.clone()), router_with(Some(nat), inside));
        let mut x: u64 = 0x005e_ed0f_fa57;
        let mut rnd = move |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        };
        let (mut now, mut fast_out, mut fast_in) = (1u64, 0, 0);
        for i in 0..40_000 {
            now += rnd(4_000_000);
            let sessions: Vec<_> = general
                .nat()
                .map(|n| n.sessions().copied().collect())
                .unwrap_or_default();
            let reply = !sessions.is_empty() && rnd(2) == 0;
            let proto = [IpProtocol::UDP, IpProtocol::TCP, IpProtocol::TCP, IpProtocol::ICMP][rnd(4) as usize];
            let (ingress, src, dst, sport, dport, proto) = if reply {
                let s = sessions[rnd(sessions.len() as u64) as usize];
                let (rport, eport) = (s.remote_port, s.ext_port);
                (Side::Outside, s.remote_ip, nat.address, rport, eport, s.proto())
            } else {
                let remote = [[10, 10, 2, 2], [8, 8, 8, 8], [10, 10, 2, 77]][rnd(3) as usize];
                let host = u32::from_be_bytes([10, 10, 1, 2 + rnd(8) as u8]);
                (
                    Side::Inside,
                    host,
                    u32::from_be_bytes(remote),
                    4000 + rnd(3) as u16,
                    53,
                    proto,
                )
            };
            let mut f = vec![0u8; 14 + 20 + 20 + rnd(30) as usize];
            let total = (f.len() - 14) as u16;
            f[0..6].copy_from_slice(&[2, 0, 0x5e, 0, 1, 1]);
            f[6..12].copy_from_slice(&[2, 0, 0, 0, 1, 2]);
            f[12..14].copy_from_slice(&[8, 0]);
            f[14] = 0x45;
            f[16..18].copy_from_slice(&total.to_be_bytes());
            f[22] = if rnd(50) == 0 { 1 } else { 64 };
            f[23] = proto;
            f[26..30].copy_from_slice(&src.to_be_bytes());
            f[30..34].copy_from_slice(&dst.to_be_bytes());
            if rnd(40) == 0 {
                f[20] = 0x20 | rnd(2) as u8; // a later fragment (or MF with offset)
            }
            f[34..36].copy_from_slice(&sport.to_be_bytes());
            f[36..38].copy_from_slice(&dport.to_be_bytes());
            match proto {
                IpProtocol::UDP => {
                    f[38..40].copy_from_slice(&(total - 20).to_be_bytes());
                    if rnd(4) > 0 {
                        f[40..42].copy_from_slice(&(rnd(65536) as u16).to_be_bytes());
                    }
                }
                IpProtocol::TCP => {
                    f[46] = 0x50;
                    f[47] = [0x02, 0x12, 0x10, 0x18, 0x11, 0x04, 0x14][rnd(7) as usize];
                    f[50..52].copy_from_slice(&(rnd(65536) as u16).to_be_bytes());
                }
                _ => f[34] = if reply { 0 } else { 8 },
            }
            if rnd(8) == 0 {
                // Mangled past the IP header: the header checksum stays good.
                let at = 34 + rnd(f.len() as u64 - 34) as usize;
                f[at] = rnd(256) as u8;
            }
            if rnd(16) == 0 {
                f.truncate(34 + rnd(20) as usize);
            }
            let c = checksum::checksum(&f[14..34]);
            f[24..26].copy_from_slice(&c.to_be_bytes());

            let ctx = PacketCtx::new(ingress, now);
            let mut a = OwnedFrame::from_bytes(&f);
            let va = match a.with_frame(|fr| both.fast(fr.data_mut(), &ctx)) {
                Some(out) => {
                    if ingress == Side::Inside {
                        fast_out += 1;
                    } else {
                        fast_in += 1;
                    }
                    Verdict::Forward(out)
                }
                None => {
                    assert_eq!(a.data(), f.as_slice(), "declined, yet wrote (packet {i})");
                    a.with_frame(|fr| both.process(fr, &ctx))
                }
            };
            let mut b = OwnedFrame::from_bytes(&f);
            let vb = b.with_frame(|fr| general.ipv4_general(fr, &ctx));
            assert_eq!((va, a.data()), (vb, b.data()), "packet {i}: {f:02x?}");
            if i % 1000 == 999 {
                let (na, nb) = (both.nat().unwrap(), general.nat().unwrap());
                assert_eq!(
                    na.sessions().collect::<Vec<_>>(),
                    nb.sessions().collect::<Vec<_>>(),
                    "packet {i}"
                );
                assert_eq!((na.created, na.expired), (nb.created, nb.expired), "packet {i}");
            }
        }
        let n = general.nat().unwrap();
        assert!(
            n.created > 500 && n.expired > 300,
            "created {} expired {}",
            n.created,
            n.expired
        );
        // A third of what leaves goes to a host with no known MAC and a
        // third is ICMP: both for the general path.
        assert!(
            fast_out > 3_000 && fast_in > 10_000,
            "fast path: {fast_out} out, {fast_in} in"
        );
    }

    /// Called by the worker on every frame, the fast path checks for itself
    /// that it holds plain IPv4 to the virtual MAC, and leaves every other
    /// frame untouched.
    #[test]
    fn the_fast_path_takes_plain_ipv4_only_and_leaves_the_rest_untouched() {
        let mut r = router();
        let ctx = PacketCtx::new(Side::Inside, 1);
        let good = udp([10, 10, 1, 2], [10, 10, 2, 2], 64);
        let mut out = good.clone();
        assert_eq!(r.ipv4_fast(&mut out, &ctx), Some(Side::Outside));
        assert_eq!(&out[0..6], &[2, 0, 0, 0, 2, 2], "to the neighbour's MAC");
        assert_eq!(&out[6..12], &[2, 0, 0x5e, 0, 1, 1], "from the virtual MAC");
        assert_eq!(out[22], 63, "TTL down by one");
        assert_eq!(checksum::checksum(&out[14..34]), 0, "header checksum still good");
        assert_eq!(&out[34..], &good[34..], "payload untouched");

        type Mangle = fn(&mut Vec<u8>);
        let mangled: [(&str, Mangle); 8] = [
            ("IPv6 EtherType", |f| f[12..14].copy_from_slice(&[0x86, 0xdd])),
            ("ARP EtherType", |f| f[12..14].copy_from_slice(&[0x08, 0x06])),
            ("another destination MAC", |f| f[5] = 2),
            ("options (IHL 6)", |f| f[14] = 0x46),
            ("TTL 1", |f| f[22] = 1),
            ("bad checksum", |f| f[25] ^= 1),
            ("total length past the frame", |f| {
                f[16..18].copy_from_slice(&47u16.to_be_bytes())
            }),
            ("shorter than the IPv4 header", |f| f.truncate(33)),
        ];
        for (what, mangle) in mangled {
            let mut f = good.clone();
            mangle(&mut f);
            if what != "bad checksum" && f.len() >= 34 {
                // Each case fails one check only: the checksum stays good.
                f[24..26].fill(0);
                let c = checksum::checksum(&f[14..34]);
                f[24..26].copy_from_slice(&c.to_be_bytes());
            }
            let before = f.clone();
            assert_eq!(r.ipv4_fast(&mut f, &ctx), None, "{what}");
            assert_eq!(f, before, "{what}: untouched");
        }
        let mut to_us = udp([10, 10, 1, 2], [10, 10, 2, 1], 64);
        assert_eq!(r.ipv4_fast(&mut to_us, &ctx), None, "addressed to the router");
    }

    /// A header the NIC verified (RX offload) is not verified again, by
    /// either path: a header that does not verify passes on the NIC's word
    /// (the probe that shows whose word counted), and without it is dropped.
    #[test]
    fn a_header_checksum_the_nic_vouched_for_is_not_verified_again_by_either_path() {
        let mut broken = udp([10, 10, 1, 2], [10, 10, 2, 2], 64);
        broken[25] ^= 1;
        let (plain, vouched) = (
            PacketCtx::new(Side::Inside, 1),
            PacketCtx {
                ip_checksum_ok: true,
                ..PacketCtx::new(Side::Inside, 1)
            },
        );
        let mut r = router();
        let mut f = broken.clone();
        assert_eq!(r.ipv4_fast(&mut f, &plain), None);
        let mut frame = OwnedFrame::from_bytes(&broken);
        assert_eq!(
            frame.with_frame(|fr| r.process_general(fr, &plain)),
            Verdict::Drop(DropReason::BadChecksum)
        );

        let (mut fast, mut general) = (broken.clone(), OwnedFrame::from_bytes(&broken));
        assert_eq!(r.ipv4_fast(&mut fast, &vouched), Some(Side::Outside));
        assert_eq!(
            general.with_frame(|fr| r.process_general(fr, &vouched)),
            Verdict::Forward(Side::Outside)
        );
        assert_eq!(general.data(), &fast[..], "the same bytes by either path");
        assert_eq!(fast[22], 63, "routed: TTL down by one");
        let patched = u16::from_be_bytes([fast[24], fast[25]]);
        assert_eq!(
            patched,
            checksum::after_ttl_decrement(u16::from_be_bytes([broken[24], broken[25]])),
            "the checksum it came with, patched for the TTL (not recomputed)"
        );
    }
}
