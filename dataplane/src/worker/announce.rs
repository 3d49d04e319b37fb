//! What a new primary tells its neighbours: a gratuitous ARP for each virtual
//! IP (from the virtual MAC), and, for a transparent (L2) function, a RARP
//! announcement for each MAC that lives behind the node, on the other port,
//! so learning switches move those MACs to this node at once.

use std::net::Ipv4Addr;

use super::{ReplState, Scratch, Worker};
use crate::dpdk::{Mbuf, Mempool};
use crate::nf::{NetworkFunction, Side};
use crate::stats::bump;
use crate::wire::arp::{ArpOp, ArpPacket, PACKET_LEN as ARP_LEN};
use crate::wire::ethernet::{EtherType, EthernetFrame, HEADER_LEN as ETH_LEN};
use crate::wire::MacAddr;

/// RARP's EtherType and "request reverse" operation (RFC 903), as QEMU
/// announces a migrated guest.
const ETHERTYPE_RARP: u16 = 0x8035;
const RARP_REQUEST_REVERSE: u16 = 3;

/// A broadcast ARP-format frame (gratuitous ARP or RARP announcement).
pub fn arp_frame(
    pool: &Mempool,
    ethertype: u16,
    op: u16,
    src: MacAddr,
    sha: MacAddr,
    spa: Ipv4Addr,
    tpa: Ipv4Addr,
) -> Option<Mbuf> {
    let mut m = Mbuf::alloc(pool)?;
    // 60 bytes: the Ethernet minimum without FCS.
    let buf = m.append(60)?;
    buf.fill(0);
    let mut eth = EthernetFrame::new_unchecked(&mut buf[..]);
    eth.set_dst(MacAddr::BROADCAST);
    eth.set_src(src);
    eth.set_ethertype(ethertype);
    let tha = if ethertype == ETHERTYPE_RARP {
        sha
    } else {
        MacAddr::ZERO
    };
    ArpPacket::new_unchecked(&mut buf[ETH_LEN..ETH_LEN + ARP_LEN]).emit(op, sha, spa, tha, tpa);
    Some(m)
}

impl<F: NetworkFunction> Worker<F> {
    pub(crate) fn announce(&mut self, st: &mut ReplState, s: &mut Scratch) {
        let Some(repl) = self.repl.as_ref() else {
            return;
        };
        let pool = repl.pool.clone();
        let a = repl.settings.announce.clone();
        let mut n = 0u64;
        for side in Side::ALL {
            if self.shard == 0 {
                if let (Some(vmac), Some(vip)) = (a.vmac, a.vips[side.index()]) {
                    if let Some(m) = arp_frame(&pool, EtherType::ARP, ArpOp::REQUEST, vmac, vmac, vip, vip) {
                        let _ = s.tx[side.index()].push(m);
                        n += 1;
                    }
                }
            }
            if F::TRANSPARENT_L2 {
                // MACs that came in on the other side live behind this port.
                for mac in st.macs[side.other().index()].macs() {
                    if s.tx[side.index()].is_full() {
                        break;
                    }
                    if let Some(m) = arp_frame(
                        &pool,
                        ETHERTYPE_RARP,
                        RARP_REQUEST_REVERSE,
                        mac,
                        mac,
                        Ipv4Addr::UNSPECIFIED,
                        Ipv4Addr::UNSPECIFIED,
                    ) {
                        let _ = s.tx[side.index()].push(m);
                        n += 1;
                    }
                }
            }
        }
        self.transmit(s);
        bump(&self.shared.repl.announcements, n);
    }
}
