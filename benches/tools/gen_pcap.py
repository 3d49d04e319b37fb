#!/usr/bin/python3
"""Writes the benchmark pcaps with scapy.

  gen_pcap.py udp64 OUT.pcap [FLOWS]   64-byte frames (60 + FCS): Ether/IPv4/UDP,
                                       FLOWS source ports (default 1024)
"""
import sys

from scapy.all import Ether, IP, UDP, Raw, wrpcap  # noqa: E402


def udp64(path, flows):
    pkts = []
    for i in range(flows):
        p = (
            Ether(src="02:00:00:00:00:01", dst="02:00:5e:00:01:01")
            / IP(src="10.10.1.2", dst="10.10.2.2", ttl=64)
            / UDP(sport=1024 + i, dport=9000)
        )
        pad = 60 - len(p)
        p = p / Raw(b"\x00" * pad)
        assert len(p) == 60, len(p)
        pkts.append(p)
    wrpcap(path, pkts)


if __name__ == "__main__":
    kind, out = sys.argv[1], sys.argv[2]
    flows = int(sys.argv[3]) if len(sys.argv) > 3 else 1024
    {"udp64": udp64}[kind](out, flows)
