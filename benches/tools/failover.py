#!/usr/bin/env python3
"""Failover benchmark on the test bed (called by scripts/bench.sh failover).

For each setting, RUNS times: a fresh lockstep primary and backup
(`forward`), a sequence-numbered UDP stream from ls-client to ls-server,
`kill -9` of the primary mid-stream; the receiver's longest gap (ms), lost
and duplicated packets. Reported as min / median / max per setting, for the
default timers (heartbeat 10 ms x 3) and heartbeat_ms = 1.

Then the classic answer on the same test bed: two Linux kernel routers in
the node namespaces, keepalived (VRRPv3) at its fastest timer and conntrackd
(FTFW) syncing state over the management link; the master "dies" (kill -9 of
keepalived and conntrackd, its data links down), same stream, same report.

Finally a soak: the lockstep pair under a light stream for SOAK seconds
without faults; any takeover there is a false one.
"""
import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
KEY = "6c6f636b737465702d746573742d6b65792d30303031"
MGMT = {"primary": "10.10.9.1:7700", "backup": "10.10.9.2:7700"}


def sh(*a, check=True, **kw):
    return subprocess.run(list(a), check=check, **kw)


def ns(name, *a, **kw):
    return subprocess.Popen(["ip", "netns", "exec", f"ls-{name}", *a], **kw)


def testbed(*args):
    sh(f"{ROOT}/scripts/testbed.sh", *args, stdout=subprocess.DEVNULL)


def config(node, node_id, prio, role, peer, hb_ms):
    return f"""
[node]
id = {node_id}
priority = {prio}
role = "{role}"
[ports]
inside = "net_af_packet0"
outside = "net_af_packet1"
replication = "net_af_packet2"
[dataplane]
workers = 1
burst = 32
mbufs = 32767
idle_sleep_us = 10
[function]
kind = "forward"
[management]
address = "{MGMT[node]}"
peers = ["{MGMT[peer]}"]
heartbeat_ms = {hb_ms}
dead_intervals = 3
key = "{KEY}"
[replication]
shadow_ring = 2048
ingress_window = 8192
"""


class Node:
    def __init__(self, out, name, cfg_text, tag, binary):
        self.name = name
        self.runtime_dir = f"/var/run/dpdk/lsfo-{name}-{tag}"
        self.log = f"{out}/{name}-{tag}.log"
        cfg = f"{out}/{name}-{tag}.toml"
        with open(cfg, "w") as f:
            f.write(cfg_text)
        # Each node's worker on its own core: the primary's on core 1, the
        # backup's on core 0 (their control threads sleep most of the time).
        lcores = "0,1" if name == "primary" else "1,0"
        self.p = ns(name, binary, "-l", lcores, "--no-huge", "-m", "512", "--no-pci", "--no-shconf",
                    f"--file-prefix=lsfo-{name}-{tag}", "--log-level=lib.eal:error",
                    "--vdev", "net_af_packet0,iface=in0,framecnt=4096",
                    "--vdev", "net_af_packet1,iface=out0,framecnt=4096",
                    "--vdev", "net_af_packet2,iface=rep0,framecnt=4096",
                    "--", "--config", cfg, stdin=subprocess.DEVNULL,
                    stdout=open(self.log + ".out", "w"), stderr=open(self.log, "w"))

    def text(self):
        try:
            return open(self.log).read()
        except OSError:
            return ""

    def wait_for(self, needle, secs=10):
        end = time.time() + secs
        while time.time() < end:
            if needle in self.text():
                return True
            time.sleep(0.05)
        return False

    def kill9(self):
        self.p.send_signal(signal.SIGKILL)
        self.p.wait()
        # EAL could not remove its runtime directory.
        shutil.rmtree(self.runtime_dir, ignore_errors=True)

    def stop(self):
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(10)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        shutil.rmtree(self.runtime_dir, ignore_errors=True)


def stream(out, rate, seconds, kill_after, kill):
    """Runs the stream; calls kill() after kill_after seconds; returns the report."""
    rep, sent = f"{out}/udp.json", f"{out}/udp-sent.json"
    for f in (rep, sent):
        if os.path.exists(f):
            os.unlink(f)
    r = ns("server", "python3", f"{ROOT}/scripts/udpstream.py", "recv", "9000", "--idle", "1",
           "--out", rep, "--sent", sent, stdout=subprocess.DEVNULL)
    time.sleep(0.3)
    s = ns("client", "python3", f"{ROOT}/scripts/udpstream.py", "send", "10.10.2.2", "9000",
           "--rate", str(rate), "--seconds", str(seconds), stdout=open(sent, "w"))
    if kill is not None:
        time.sleep(kill_after)
        kill()
    s.wait()
    r.wait()
    return json.load(open(rep))


def summary(xs):
    return {"min": min(xs), "median": statistics.median(xs), "max": max(xs)}


def lockstep_runs(args, hb_ms):
    testbed("up", "--bump")
    results = []
    try:
        for i in range(args.runs):
            # The backup first, so each run measures a backup that followed
            # the stream from sequence 1 (forward would join a stream under
            # way; the measurement is the takeover, not the join).
            b = Node(args.out, "backup", config("backup", 2, 100, "backup", "primary", hb_ms), f"hb{hb_ms}-{i}", args.lockstep)
            if not b.wait_for("is backup"):
                raise RuntimeError(f"backup did not start: {b.text()[-2000:]}")
            p = Node(args.out, "primary", config("primary", 1, 200, "primary", "backup", hb_ms), f"hb{hb_ms}-{i}", args.lockstep)
            if not p.wait_for("is primary"):
                raise RuntimeError(f"primary did not start: {p.text()[-2000:]}")
            time.sleep(0.2)
            r = stream(args.out, args.rate, args.seconds, args.seconds / 2, p.kill9)
            took = b.wait_for("TAKEOVER done", 5)
            b.stop()
            p.stop()
            r["took_over"] = took
            # Where the gap went: detection after the primary's last frame,
            # then the new primary's first egress after detection.
            log = b.text()
            det = re.search(r"TAKEOVER: .*last replication frame ([\d.]+) ms ago", log)
            egr = re.search(r"TAKEOVER (?:done .*)?first egress ([\d.]+) ms after detection", log)
            r["detected_ms_after_last_frame"] = float(det.group(1)) if det else None
            r["first_egress_ms_after_detection"] = float(egr.group(1)) if egr else None
            results.append(r)
            print(f"  lockstep hb {hb_ms} ms run {i + 1}: gap {r['longest_gap_ms']} ms, lost {r['lost']}, dup {r['duplicates']}"
                  f" (detected {r['detected_ms_after_last_frame']} ms after the last frame, first egress"
                  f" {r['first_egress_ms_after_detection']} ms after that; the sender sent the two packets"
                  f" {r.get('longest_gap_sent_apart_ms')} ms apart)", flush=True)
    finally:
        testbed("down")
    return results


KEEPALIVED = """
global_defs {{
    router_id kr{rid}
    script_user root
    enable_script_security
    vrrp_garp_master_delay 0
    vrrp_garp_master_repeat 1
}}
vrrp_sync_group G {{
    group {{ IN OUT }}
    notify_master "/usr/sbin/conntrackd -C {ctd} -c"
    notify_backup "/usr/sbin/conntrackd -C {ctd} -n"
}}
vrrp_instance IN {{
    state {state}
    interface in0
    virtual_router_id 51
    priority {prio}
    advert_int {adv}
    version 3
    nopreempt
    virtual_ipaddress {{ 10.10.1.1/24 }}
}}
vrrp_instance OUT {{
    state {state}
    interface out0
    virtual_router_id 52
    priority {prio}
    advert_int {adv}
    version 3
    nopreempt
    virtual_ipaddress {{ 10.10.2.1/24 }}
}}
"""

CONNTRACKD = """
Sync {{
    Mode FTFW {{ }}
    UDP {{
        IPv4_address {me}
        IPv4_Destination_Address {peer}
        Port 3780
        Interface mgmt0
        Checksum on
    }}
}}
General {{
    Systemd off
    HashSize 8192
    HashLimit 65535
    LogFile {out}/conntrackd-{name}.log
    LockFile {out}/conntrackd-{name}.lock
    UNIX {{ Path {out}/conntrackd-{name}.ctl }}
    NetlinkBufferSize 2097152
    NetlinkBufferSizeMaxGrowth 8388608
    Filter From Userspace {{
        Address Ignore {{ IPv4_address 127.0.0.1 }}
    }}
}}
"""


def kernel_router_runs(args):
    testbed("up")
    results = []
    procs = []
    try:
        addrs = {"primary": ("10.10.1.11", "10.10.2.11", "10.10.9.1", "10.10.9.2"),
                 "backup": ("10.10.1.12", "10.10.2.12", "10.10.9.2", "10.10.9.1")}
        for name, (a_in, a_out, me, peer) in addrs.items():
            for cmd in (["ip", "addr", "add", f"{a_in}/24", "dev", "in0"], ["ip", "addr", "add", f"{a_out}/24", "dev", "out0"],
                        ["sysctl", "-qw", "net.ipv4.ip_forward=1"]):
                sh("ip", "netns", "exec", f"ls-{name}", *cmd)
        for i in range(args.runs):
            procs = []
            for name, (a_in, a_out, me, peer) in addrs.items():
                ctd = f"{args.out}/conntrackd-{name}.conf"
                with open(ctd, "w") as f:
                    f.write(CONNTRACKD.format(me=me, peer=peer, out=args.out, name=name))
                for stale in (f"{args.out}/conntrackd-{name}.lock", f"{args.out}/conntrackd-{name}.ctl"):
                    if os.path.exists(stale):
                        os.unlink(stale)
                procs.append(ns(name, "conntrackd", "-C", ctd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
                kcfg = f"{args.out}/keepalived-{name}.conf"
                with open(kcfg, "w") as f:
                    f.write(KEEPALIVED.format(rid=1 if name == "primary" else 2, state="MASTER" if name == "primary" else "BACKUP",
                                              prio=200 if name == "primary" else 100, adv=args.vrrp_advert, ctd=ctd))
                procs.append(ns(name, "keepalived", "-n", "-l", "-D", "-f", kcfg, "-p", f"{args.out}/ka-{name}.pid",
                                "-r", f"{args.out}/ka-vrrp-{name}.pid", stdout=open(f"{args.out}/keepalived-{name}.log", "w"),
                                stderr=subprocess.STDOUT))
                if name == "primary":
                    time.sleep(1.5)
            time.sleep(2.0)

            def die():
                for p in procs[:2]:  # the primary's conntrackd and keepalived
                    p.send_signal(signal.SIGKILL)
                for dev in ("in0", "out0", "mgmt0"):
                    sh("ip", "netns", "exec", "ls-primary", "ip", "link", "set", dev, "down")

            r = stream(args.out, args.rate, args.seconds, args.seconds / 2, die)
            results.append(r)
            print(f"  keepalived advert {args.vrrp_advert}s run {i + 1}: gap {r['longest_gap_ms']} ms, lost {r['lost']}, dup {r['duplicates']}", flush=True)
            for p in procs:
                if p.poll() is None:
                    p.send_signal(signal.SIGTERM)
                    try:
                        p.wait(5)
                    except subprocess.TimeoutExpired:
                        p.kill()
            for dev in ("in0", "out0", "mgmt0"):
                sh("ip", "netns", "exec", "ls-primary", "ip", "link", "set", dev, "up")
            sh("ip", "netns", "exec", "ls-primary", "ip", "addr", "del", "10.10.1.1/24", "dev", "in0", check=False, stderr=subprocess.DEVNULL)
            sh("ip", "netns", "exec", "ls-primary", "ip", "addr", "del", "10.10.2.1/24", "dev", "out0", check=False, stderr=subprocess.DEVNULL)
            sh("ip", "netns", "exec", "ls-backup", "ip", "addr", "del", "10.10.1.1/24", "dev", "in0", check=False, stderr=subprocess.DEVNULL)
            sh("ip", "netns", "exec", "ls-backup", "ip", "addr", "del", "10.10.2.1/24", "dev", "out0", check=False, stderr=subprocess.DEVNULL)
            time.sleep(0.5)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        testbed("down")
    return results


def soak(args):
    testbed("up", "--bump")
    try:
        b = Node(args.out, "backup", config("backup", 2, 100, "backup", "primary", 10), "soak", args.lockstep)
        b.wait_for("is backup")
        p = Node(args.out, "primary", config("primary", 1, 200, "primary", "backup", 10), "soak", args.lockstep)
        p.wait_for("is primary")
        r = stream(args.out, 1000, args.soak, 0, None)
        false_takeovers = b.text().count("TAKEOVER:") + p.text().count("TAKEOVER:")
        alarms = b.text().count("ALARM")
        b.stop()
        p.stop()
        return {"seconds": args.soak, "false_takeovers": false_takeovers, "alarms": alarms, "lost": r["lost"]}
    finally:
        testbed("down")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lockstep", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--rate", type=int, default=10000)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--soak", type=int, default=600)
    ap.add_argument("--vrrp-advert", default="0.01")
    ap.add_argument("--skip-keepalived", action="store_true")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    result = {"date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "runs": args.runs, "rate_pps": args.rate, "cases": []}
    cases = [("lockstep heartbeat 10 ms x 3", lambda: lockstep_runs(args, 10)),
             ("lockstep heartbeat 1 ms x 3", lambda: lockstep_runs(args, 1))]
    if not args.skip_keepalived:
        cases.append((f"keepalived VRRPv3 advert {args.vrrp_advert} s + conntrackd", lambda: kernel_router_runs(args)))
    for name, fn in cases:
        print(f"{name}:", flush=True)
        rs = fn()
        result["cases"].append({
            "name": name,
            "gap_ms": summary([r["longest_gap_ms"] for r in rs]),
            "lost": summary([r["lost"] for r in rs]),
            "duplicates": summary([r["duplicates"] for r in rs]),
            # A backup that refused (or failed) to take over is a run the
            # gap figures alone would not show.
            "took_over": sum(1 for r in rs if r.get("took_over")) if "took_over" in rs[0] else None,
            "runs": rs,
        })
    if args.soak > 0:
        print(f"soak: {args.soak} s without faults", flush=True)
        result["soak"] = soak(args)
    with open(f"{args.out}/failover.json", "w") as f:
        json.dump(result, f, indent=2)
    print(f"\n{'case':<50} {'gap ms min/med/max':>24} {'lost min/med/max':>18} {'dup min/med/max':>18} {'took over':>10}")
    for c in result["cases"]:
        g, l, d = c["gap_ms"], c["lost"], c["duplicates"]
        took = "" if c["took_over"] is None else f"{c['took_over']}/{len(c['runs'])}"
        print(f"{c['name']:<50} {g['min']:>7.1f}/{g['median']:>6.1f}/{g['max']:>7.1f} {l['min']:>6}/{l['median']:>5}/{l['max']:>5} {d['min']:>6}/{d['median']:>5}/{d['max']:>5} {took:>10}")
    if "soak" in result:
        s = result["soak"]
        print(f"soak {s['seconds']} s: {s['false_takeovers']} false takeovers, {s['alarms']} alarms, {s['lost']} lost")
    print(f"\nresults: {args.out}/failover.json")


if __name__ == "__main__":
    sys.exit(main())
