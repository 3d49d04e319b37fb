//! Mode changes: a backup becomes the primary (takeover), a primary becomes
//! a backup (fenced, or handing over at a sequence boundary).

use std::sync::atomic::Ordering::Relaxed;

use super::{Mode, ReplState, Scratch, Worker, MAX_BURST};
use crate::clock::TscClock;
use crate::dpdk::Mbuf;
use crate::nf::{DropReason, NetworkFunction, Side};
use crate::replication::seq::SeqTracker;
use crate::replication::FrameType;

impl<F: NetworkFunction> Worker<F> {
    /// Becomes the primary of `epoch`. From backup, in this order:
    /// 1. handle every replication frame still queued (the old primary's
    ///    last words), and window what the data ports still hold;
    /// 2. resend the shadow entries after the last `tx_done` heard (minus
    ///    `takeover_replay`): the egress the old primary may not have sent;
    /// 3. continue the old primary's sequence numbers and clock;
    /// 4. process, as new ingress, what the data ports delivered that the
    ///    old primary never replicated (the ingress window);
    /// 5. announce (gratuitous ARP, MAC announcements).
    pub(crate) fn become_primary(&mut self, epoch: u32, st: &mut ReplState, s: &mut Scratch, clock: &TscClock) {
        let shared = self.shared.clone();
        let r = &shared.repl;
        if st.mode == Mode::Backup {
            let now = clock.now_ns();
            // Whatever still sits in the RX rings: data-port copies first,
            // then the replicas that retire them.
            for _ in 0..64 {
                let windowed = self.window_data_ports(st, s, now);
                if self.poll_replication(st, s, now) + windowed == 0 {
                    break;
                }
            }
            let replay = self.repl.as_ref().map(|p| p.settings.replay).unwrap_or(0);
            let resend = st.shadow.drain_after(st.tx_done_seen.saturating_sub(replay));
            let replayed = resend.len() as u64;
            st.first_egress_due = true;
            let flush = |w: &mut Self, st: &mut ReplState, s: &mut Scratch| {
                let sent = w.transmit(s).0;
                w.note_egress(st, sent, clock.now_ns());
            };
            // In-place egress is copied out of its batch frame now.
            let pool = self.repl.as_ref().map(|p| p.pool.clone());
            for (_, e) in resend {
                let Some((side, m)) = pool
                    .as_ref()
                    .and_then(|p| st.held.own_frame(e, &mut st.record_stash, p))
                else {
                    self.shared.counters.drop(DropReason::NoMbuf, 1);
                    continue;
                };
                if s.tx[side.index()].is_full() {
                    flush(self, st, s);
                }
                let _ = s.tx[side.index()].push(m);
            }
            flush(self, st, s);
            st.held.release_before(None, &mut st.freed);
            Mbuf::free_bulk(&mut st.freed);
            r.takeover_replayed.store(replayed, Relaxed);
            st.next_seq = st.tracker.last();
            st.tx_done = st.next_seq;
            st.tx_done_sent = 0;
            if st.last_time_ns != 0 {
                // New stamps continue the old primary's clock from its last
                // one, so timeouts driven by replicated time stay monotonic.
                st.time_offset = st.last_time_ns.wrapping_sub(now);
            }
        }
        st.epoch = epoch;
        st.mode = Mode::Primary;
        // A checkpoint under way, either side, belonged to the old roles.
        st.ckpt.reset();
        self.nf.track_changes(false);
        self.process_unreplicated(st, s, clock);
        self.announce(st, s);
        r.takeover_done_ns.store(clock.now_ns(), Relaxed);
        let now = clock.now_ns();
        self.send_marker(FrameType::Keepalive, &[], st, now);
    }

    /// After a takeover, stamps the new primary's first egress (at local
    /// `now_ns`), whatever it is: a shadow entry resent, an unreplicated
    /// packet, or new ingress.
    #[inline]
    pub(crate) fn note_egress(&self, st: &mut ReplState, sent: usize, now_ns: u64) {
        if sent > 0 && std::mem::take(&mut st.first_egress_due) {
            self.shared.repl.takeover_first_egress_ns.store(now_ns.max(1), Relaxed);
        }
    }

    /// Step 4 of a takeover: what the windows still hold was never
    /// replicated; through the primary path, in arrival order.
    fn process_unreplicated(&mut self, st: &mut ReplState, s: &mut Scratch, clock: &TscClock) {
        let mut items: Vec<(u64, Side, Mbuf)> = Vec::new();
        for side in Side::ALL {
            items.extend(
                st.windows[side.index()]
                    .take_all()
                    .into_iter()
                    .map(|(t, m)| (t, side, m)),
            );
        }
        items.sort_by_key(|(t, _, _)| *t);
        let n = items.len() as u64;
        let mut it = items.into_iter().peekable();
        while let Some((_, side, m)) = it.next() {
            s.pending.push(m);
            let same_next = it.peek().is_some_and(|(_, sd, _)| *sd == side);
            if !same_next || s.pending.len() == MAX_BURST {
                self.shared.counters.rx(side, s.pending.len() as u64);
                self.primary_ingest(side, 0, st, s, clock.now_ns());
            }
        }
        self.shared.repl.takeover_unreplicated.store(n, Relaxed);
    }

    /// Stops transmitting and follows the primary of `epoch`.
    pub(crate) fn become_backup(&mut self, epoch: u32, diverged: bool, st: &mut ReplState, s: &mut Scratch) {
        if st.mode == Mode::Primary {
            // Continue numbering from where this primary stopped; a fenced
            // primary's state may differ from the new primary's.
            st.tracker = if diverged {
                SeqTracker::diverged(st.next_seq)
            } else {
                SeqTracker::at(st.next_seq)
            }
            .joinable(F::STATELESS);
            st.tx_done_seen = st.tx_done;
            st.last_time_ns = 0;
            for side in Side::ALL {
                s.tx[side.index()].clear();
            }
        } else if diverged {
            st.tracker.mark_unsynced();
        }
        if diverged && F::STATELESS {
            // Nothing of a function without state can diverge: it joins the
            // new primary's stream at the next frame.
            st.tracker = SeqTracker::new().joinable(true);
        }
        for w in &mut st.windows {
            w.clear();
        }
        // Packets parked for this shard belong to the primary's stream now.
        if let Some(l) = self.repl.as_ref().and_then(|p| p.handoff.as_ref()) {
            let n = l.take_for(self.shard).len();
            crate::stats::bump(&self.shared.counters.ignored_not_owner, n as u64);
        }
        // What other shards steered here as primary: the new primary has
        // its own copies of it (a backup never reads its inbox).
        loop {
            let n = self.take_inbox(s);
            if n == 0 {
                break;
            }
            s.inbox.clear();
            crate::stats::bump(&self.shared.counters.ignored_not_owner, n as u64);
        }
        st.mode = Mode::Backup;
        // A checkpoint under way, either side, belonged to the old roles.
        st.ckpt.reset();
        self.nf.track_changes(false);
        st.first_egress_due = false;
        st.epoch = st.epoch.max(epoch);
        st.ack.reset();
        st.flow_lag = 0;
        st.switchover_for = 0;
        for m in &mut st.macs {
            m.clear();
        }
    }

    /// Planned switchover: this primary stops at the current sequence
    /// boundary, tells the backups in-band who takes over, and follows it.
    pub(crate) fn hand_over(&mut self, target: u32, st: &mut ReplState, s: &mut Scratch, clock: &TscClock) {
        if st.mode != Mode::Primary {
            return;
        }
        let now = clock.now_ns();
        self.send_marker(FrameType::Switchover, &target.to_be_bytes(), st, now);
        self.become_backup(st.epoch, false, st, s);
    }
}
