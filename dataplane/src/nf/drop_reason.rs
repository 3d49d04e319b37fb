//! Why a packet was dropped: one counter per reason, per worker.

macro_rules! drop_reasons {
    ($($variant:ident => $name:literal, $doc:literal;)*) => {
        /// Reasons a packet is dropped (each has its own counter).
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[repr(u8)]
        pub enum DropReason {
            $(#[doc = $doc] $variant,)*
        }

        impl DropReason {
            pub const ALL: &'static [DropReason] = &[$(DropReason::$variant,)*];
            pub const COUNT: usize = DropReason::ALL.len();

            /// The counter's name in stats and telemetry.
            pub fn name(self) -> &'static str {
                match self {
                    $(DropReason::$variant => $name,)*
                }
            }
        }
    };
}

drop_reasons! {
    Truncated => "truncated", "Shorter than its headers say.";
    Malformed => "malformed", "A header field holds an impossible value (bad IHL, version, lengths).";
    BadChecksum => "bad_checksum", "The IPv4 header checksum does not verify.";
    NotIpv4 => "not_ipv4", "An EtherType the function does not handle.";
    TtlExpired => "ttl_expired", "TTL would reach zero.";
    NoRoute => "no_route", "No route to the destination.";
    ArpPending => "arp_pending", "Next hop MAC unknown and a packet for it already waits; an ARP request went out instead.";
    NotForUs => "not_for_us", "Addressed to another host on the segment.";
    Fragment => "fragment", "A non-first IPv4 fragment the NAT cannot map.";
    UnsupportedProtocol => "unsupported_protocol", "A transport protocol the function does not handle.";
    NoSession => "no_session", "Inbound traffic that matches no NAT session.";
    TableFull => "table_full", "The session table is full.";
    PortsExhausted => "ports_exhausted", "No free NAT port for this destination.";
    RateLimited => "rate_limited", "An ICMP error suppressed by the rate limit.";
    MultiSegment => "multi_segment", "A chained mbuf; the functions need one segment.";
    ReplicationRefused => "replication_refused", "The replication port refused the replica: never processed (output commit).";
    TxRefused => "tx_refused", "The egress NIC queue refused the packet.";
    NoMbuf => "no_mbuf", "No mbuf for a replica header or clone.";
    SteerRefused => "steer_refused", "Several shards: the owning shard's inbox was full.";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_telemetry_safe() {
        let mut seen = std::collections::HashSet::new();
        for r in DropReason::ALL {
            assert!(seen.insert(r.name()), "duplicate {}", r.name());
            assert!(r.name().chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
            assert_eq!(DropReason::ALL[*r as usize], *r);
        }
    }
}
