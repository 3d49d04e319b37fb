//! Software steering between shards (DESIGN.md §3, "Steering").
//!
//! The NIC spreads packets over the shards by a flow hash, which cannot
//! know where a function keeps the state a packet needs: a NAT reply's
//! session lives on the shard whose port block holds its destination port;
//! a neighbour is learned from an ARP reply that reaches one shard only.
//! So before a packet from a data port is replicated, the function names
//! its owner ([`Owner`]) and the worker acts on it:
//!
//! - `Here`: as without steering.
//! - `Shard(k)`: the packet goes into shard `k`'s inbox. This shard's
//!   stream still carries a HANDED_OFF record of it, so a backup retires
//!   its own copy of the packet (its ingress window) in the same order and
//!   does not process it; shard `k` then takes the packet from its inbox
//!   as ingress, gives it its own sequence number, replicates it (STEERED:
//!   no window copy to retire on the backup) and processes it.
//! - `Every`: processed here, and a copy goes to every other shard, which
//!   replicates it (STEERED | COPY) and processes it with
//!   `PacketCtx::copy`: every shard learns in its own sequence order, so
//!   primary and backup stay identical shard by shard.
//!
//! The ingress side travels with the mbuf, in its `port` field (no PMD
//! reads it on transmit). A full inbox drops the packet, counted
//! (`steer_refused`). A packet handed off but not yet replicated by its
//! owner when the primary dies is not lost: the backup parked its replica
//! ([`crate::replication::handoff`]) and the owner processes it after the
//! takeover (`take_parked`).

use std::sync::Arc;

use super::{Scratch, Worker, MAX_BURST};
use crate::dpdk::ring::MbufRing;
use crate::dpdk::{Mbuf, Mempool};
use crate::nf::{DropReason, NetworkFunction, Owner, PacketCtx, Side};
use crate::stats::bump;
use crate::wire::replication::ingress;

/// What a worker needs to steer.
pub struct Steering {
    /// Every shard's inbox, indexed by shard (this one's included).
    pub inboxes: Vec<Arc<MbufRing>>,
    /// Copies of packets every shard sees come from here.
    pub pool: Arc<Mempool>,
}

/// `port` of a steered mbuf: this marker, the side, and COPY.
const TAG: u16 = 0x4000;
const TAG_COPY: u16 = 0x8000;

fn tag(m: &mut Mbuf, side: Side, copy: bool) {
    m.set_port(TAG | side as u16 | if copy { TAG_COPY } else { 0 });
}

/// The side and the replication ingress flags of a steered mbuf.
pub(crate) fn untag(m: &Mbuf) -> (Side, u16) {
    let p = m.port();
    let side = if p & 1 == 0 { Side::Inside } else { Side::Outside };
    let flags = ingress::STEERED | if p & TAG_COPY != 0 { ingress::COPY } else { 0 };
    (side, flags)
}

impl<F: NetworkFunction> Worker<F> {
    /// The owner of a packet from a data port; `Here` when this node has
    /// one shard, or the packet came from another shard already.
    #[inline]
    pub(crate) fn owner_of(&self, m: &Mbuf, side: Side, flags: u16) -> Owner {
        if self.steering.is_none() || flags & ingress::STEERED != 0 {
            return Owner::Here;
        }
        match self.nf.owner(m.data(), side) {
            Owner::Shard(k) if k == self.shard => Owner::Here,
            o => o,
        }
    }

    /// Puts `m` into shard `to`'s inbox (counted drop when full).
    pub(crate) fn hand_to(&self, to: u16, mut m: Mbuf, side: Side, copy: bool) {
        let counters = &self.shared.counters;
        let Some(ring) = self.steering.as_ref().and_then(|s| s.inboxes.get(to as usize)) else {
            counters.drop(DropReason::SteerRefused, 1);
            return;
        };
        tag(&mut m, side, copy);
        match ring.enqueue(m) {
            Ok(()) => bump(&counters.steered_out, 1),
            Err(_) => counters.drop(DropReason::SteerRefused, 1),
        }
    }

    /// Sends a copy of `m` to every other shard.
    pub(crate) fn show_everyone(&self, m: &Mbuf, side: Side) {
        let Some(st) = self.steering.as_ref() else {
            return;
        };
        for k in 0..st.inboxes.len() as u16 {
            if k == self.shard {
                continue;
            }
            match m.copy_from(&st.pool) {
                Some(c) => self.hand_to(k, c, side, true),
                None => self.shared.counters.drop(DropReason::NoMbuf, 1),
            }
        }
    }

    /// Moves what other shards steered here into `s.inbox` (at most a
    /// burst); returns how many.
    pub(crate) fn take_inbox(&self, s: &mut Scratch) -> usize {
        s.inbox.clear();
        let Some(st) = self.steering.as_ref() else {
            return 0;
        };
        let Some(ring) = st.inboxes.get(self.shard as usize) else {
            return 0;
        };
        let n = ring.dequeue_into(&mut s.inbox, self.burst.clamp(1, MAX_BURST));
        bump(&self.shared.counters.steered_in, n as u64);
        n
    }

    /// After a takeover: the packets the old primary handed to this shard
    /// but never replicated here ([`crate::replication::handoff`]), into
    /// `s.inbox` tagged as steered; returns how many.
    pub(crate) fn take_parked(&self, s: &mut Scratch) -> usize {
        s.inbox.clear();
        let Some(l) = self.repl.as_ref().and_then(|p| p.handoff.as_ref()) else {
            return 0;
        };
        if !l.any_parked() {
            return 0;
        }
        for (side, mut m) in l.take_for(self.shard) {
            tag(&mut m, side, false);
            s.inbox.push(m);
        }
        bump(&self.shared.counters.steered_in, s.inbox.len() as u64);
        s.inbox.len()
    }

    /// After replication: each packet of `s.pending` to its owner, the ones
    /// owned here through the function.
    pub(crate) fn dispatch_pending(&mut self, ctx: &PacketCtx, s: &mut Scratch) {
        let mut owners = std::mem::take(&mut s.owners);
        for (m, owner) in s.pending.drain(..).zip(owners.drain(..)) {
            match owner {
                Owner::Here => {
                    let ctx = self.ctx_of(&m, ctx);
                    self.process_one(m, &ctx, &mut s.tx)
                }
                Owner::Shard(k) => self.hand_to(k, m, ctx.ingress, false),
                Owner::Every => {
                    self.show_everyone(&m, ctx.ingress);
                    let ctx = self.ctx_of(&m, ctx);
                    self.process_one(m, &ctx, &mut s.tx);
                }
            }
        }
        s.owners = owners;
    }
}
