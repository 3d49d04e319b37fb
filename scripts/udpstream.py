#!/usr/bin/env python3
"""A sequence-numbered UDP stream and a receiver that reports what it saw.

  udpstream.py send DST_IP PORT --rate PPS --seconds S [--size BYTES]
      prints {"sent": N, "first_ns": ..., "last_ns": ...} when done
  udpstream.py recv PORT --out FILE [--idle SECONDS] [--sent SEND_SUMMARY]
      receives until no packet came for --idle seconds (and, with --sent,
      the sender is done), then writes a JSON
      report: received, unique, lost (against the sender's count from --sent,
      else the highest sequence seen), duplicates, reordered, the longest gap
      (ms) between consecutive arrivals (the kernel's receive times) and the
      packets around it, and how far apart the sender sent those two

Payload: 8-byte sequence number, 8-byte send time (ns), zero padding.
"""
import argparse
import json
import os
import socket
import struct
import sys
import time


def send(args):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    pad = b"\0" * max(0, args.size - 16)
    start = time.monotonic()
    seq = 0
    first = time.time_ns()
    end = start + args.seconds
    while True:
        now = time.monotonic()
        if now >= end:
            break
        # Catch up to the schedule: rate * elapsed packets by now.
        target = int((now - start) * args.rate)
        while seq < target:
            s.sendto(struct.pack("!QQ", seq, time.time_ns()) + pad, (args.dst, args.port))
            seq += 1
        time.sleep(0.0005)
    json.dump({"sent": seq, "first_ns": first, "last_ns": time.time_ns()}, sys.stdout)
    print()


# Linux's SO_TIMESTAMPNS (= SCM_TIMESTAMPNS), which Python does not name:
# each datagram comes with the time the kernel received it, so the gaps are
# the network's and not this process's wake-up latency.
SO_TIMESTAMPNS = 35


def kernel_time_ns(ancdata):
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(data) >= 16:
            sec, nsec = struct.unpack("qq", data[:16])
            return sec * 1_000_000_000 + nsec
    return None


# How long a receiver given --sent waits in silence for the sender's summary.
SENDER_WAIT_S = 60


def sender_summary(path):
    """The sender's summary once it is written whole, else None."""
    if not path or not os.path.exists(path):
        return None
    try:
        return json.load(open(path))
    except (ValueError, OSError):
        return None


def recv(args):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 << 20)
    s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    s.bind(("0.0.0.0", args.port))
    s.settimeout(0.05)
    seen = set()
    arrivals = dups = reordered = 0
    max_seq = -1
    last_ns = None  # arrival of the previous packet (kernel time)
    last_mono_ns = None  # when this process last read one
    last_seq = None
    gap = (0, None, None)  # longest silence between two arrivals, and around which packets
    gap_sent_ns = 0  # how far apart the sender sent those two packets
    last_sent_ns = None
    started = time.monotonic()
    while True:
        try:
            data, anc, _, _ = s.recvmsg(65535, socket.CMSG_SPACE(16))
        except socket.timeout:
            if last_mono_ns is None:
                if time.monotonic() - started > args.wait_first:
                    break
            else:
                idle = (time.monotonic_ns() - last_mono_ns) / 1e9
                # With --sent, silence ends the run only once the sender
                # is done: a stream cut short (no takeover) must count as
                # lost, not as a shorter stream.
                if idle > args.idle and (sender_summary(args.sent) is not None or idle > SENDER_WAIT_S):
                    break
            continue
        last_mono_ns = time.monotonic_ns()
        if len(data) < 16:
            continue
        # Gaps between kernel arrival times (this process's clock if the
        # kernel gave none); the idle timeout on this process's clock.
        t = kernel_time_ns(anc) or time.time_ns()
        seq, sent_ns = struct.unpack("!QQ", data[:16])
        arrivals += 1
        if seq in seen:
            dups += 1
        else:
            seen.add(seq)
            if seq < max_seq:
                reordered += 1
        max_seq = max(max_seq, seq)
        if last_ns is not None and t - last_ns > gap[0]:
            gap = (t - last_ns, last_seq, seq)
            gap_sent_ns = max(0, sent_ns - last_sent_ns)
        last_ns, last_seq, last_sent_ns = t, seq, sent_ns
    summary = sender_summary(args.sent) or {}
    sent = summary.get("sent")
    # Silence from the last arrival to the sender's end is a gap too (the
    # stream never came back).
    sender_end = summary.get("last_ns")
    if last_ns is not None and sender_end is not None and sender_end - last_ns > gap[0]:
        gap = (sender_end - last_ns, last_seq, None)
        gap_sent_ns = 0
    expected = sent if sent is not None else max_seq + 1
    missing = [q for q in range(expected) if q not in seen]
    report = {
        "sent": sent,
        "received": arrivals,
        "unique": len(seen),
        "lost": len(missing),
        "duplicates": dups,
        "reordered": reordered,
        "longest_gap_ms": round(gap[0] / 1e6, 3),
        "longest_gap_between": [gap[1], gap[2]],
        # The part of the longest gap that was the sender's: the two
        # packets' send times apart (a sender descheduled, not the path).
        "longest_gap_sent_apart_ms": round(gap_sent_ns / 1e6, 3),
        "first_missing": missing[:20],
    }
    with open(args.out, "w") as f:
        json.dump(report, f, indent=2)
    print(json.dumps(report))


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("send")
    a.add_argument("dst")
    a.add_argument("port", type=int)
    a.add_argument("--rate", type=float, default=20000)
    a.add_argument("--seconds", type=float, default=5)
    a.add_argument("--size", type=int, default=64)
    b = sub.add_parser("recv")
    b.add_argument("port", type=int)
    b.add_argument("--out", required=True)
    b.add_argument("--idle", type=float, default=1.0)
    b.add_argument("--wait-first", type=float, default=30.0)
    b.add_argument("--sent", help="the sender's summary file, for the lost count")
    args = ap.parse_args()
    {"send": send, "recv": recv}[args.cmd](args)


if __name__ == "__main__":
    main()
