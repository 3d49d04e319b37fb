#!/usr/bin/env python3
"""Side-by-side throughput of dpdk-testpmd (io forwarding) and lockstep on the
same vdevs and pinned cores, in one run. Called by scripts/bench.sh.

Each case: a source port (net_null or net_pcap replaying a pcap with
infinite_rx=1) and a net_null sink (no-rx=1); one forwarding core (lcore 1),
the main lcore on core 0. The rate is what the sink transmitted per second
over the measured window; each case runs RUNS times and the median counts.
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time


class Prompt:
    """An interactive DPDK application driven through its prompt."""

    def __init__(self, argv, prompt, log):
        self.prompt = prompt.encode()
        self.log = open(log, "wb")
        self.p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log)
        os.set_blocking(self.p.stdout.fileno(), False)
        self.buf = b""
        self.read_until_prompt(60)

    def read_until_prompt(self, timeout):
        deadline = time.time() + timeout
        while self.prompt not in self.buf:
            if time.time() > deadline or self.p.poll() is not None:
                raise RuntimeError(f"no prompt; got: {self.buf[-2000:].decode(errors='replace')}")
            try:
                chunk = self.p.stdout.read()
            except BlockingIOError:
                chunk = None
            if chunk:
                self.log.write(chunk)
                self.buf += chunk
            else:
                time.sleep(0.02)
        before, _, self.buf = self.buf.partition(self.prompt)
        return before.decode(errors="replace")

    def cmd(self, line, timeout=30):
        self.p.stdin.write((line + "\n").encode())
        self.p.stdin.flush()
        return self.read_until_prompt(timeout)

    def quit(self):
        try:
            self.p.stdin.write(b"quit\n")
            self.p.stdin.flush()
        except BrokenPipeError:
            pass
        try:
            self.p.wait(30)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait()


def remove_runtime_dir(prefix):
    """testpmd leaves /var/run/dpdk/<prefix> behind; remove ours."""
    d = f"/var/run/dpdk/{prefix}"
    if os.path.isdir(d):
        for f in os.listdir(d):
            os.unlink(os.path.join(d, f))
        os.rmdir(d)


def tx_packets(stats_text, port_index):
    """TX-packets of the port_index-th port block of `show port stats all`."""
    blocks = re.split(r"#+ NIC statistics for port", stats_text)[1:]
    return int(re.search(r"TX-packets:\s*(\d+)", blocks[port_index]).group(1))


def eal_common(args, prefix):
    e = ["-l", "0,1", "--no-pci", f"--file-prefix={prefix}", "--log-level=lib.eal:error"]
    if args.hugepages:
        e += ["--huge-unlink", "-m", "1024"]
    else:
        e += ["--no-huge", "-m", "1024", "--no-shconf"]
    return e


def vdevs(source, pcap):
    src = "net_null0,size=64" if source == "net_null" else f"net_pcap0,rx_pcap={pcap},infinite_rx=1"
    name = "net_null0" if source == "net_null" else "net_pcap0"
    return ["--vdev", src, "--vdev", "net_null1,no-rx=1"], name


def measure_mpps(app, args):
    """Port 1's TX rate over args.seconds after args.warmup; lockstep's
    `show port stats all` has testpmd's layout, so this serves both."""
    time.sleep(args.warmup)
    app.cmd("clear port stats all")
    t0 = time.time()
    time.sleep(args.seconds)
    text = app.cmd("show port stats all")
    return tx_packets(text, 1) / (time.time() - t0) / 1e6


def run_testpmd(args, source, pcap, run):
    v, _ = vdevs(source, pcap)
    # testpmd prints with stdio, fully buffered on a pipe: unbuffer it.
    argv = ["stdbuf", "-o0", "dpdk-testpmd"] + eal_common(args, f"bench-tp-{os.getpid()}") + v + [
        "--", "-i", "--forward-mode=io", "--nb-cores=1", f"--burst={args.burst}",
        "--rxq=1", "--txq=1", "--total-num-mbufs=16384", "--no-lsc-interrupt",
    ]
    app = Prompt(argv, "testpmd> ", f"{args.out}/testpmd-{source}-{run}.log")
    try:
        app.cmd("start")
        mpps = measure_mpps(app, args)
        app.cmd("stop")
    finally:
        app.quit()
        remove_runtime_dir(f"bench-tp-{os.getpid()}")
    return {"mpps": mpps}


def run_lockstep(args, source, pcap, run, config, extra_vdevs=()):
    v, src_name = vdevs(source, pcap)
    v = v + list(extra_vdevs)
    cfg_path = f"{args.out}/lockstep-{source}-{abs(hash(config)) % 10000}.toml"
    with open(cfg_path, "w") as f:
        f.write(config.replace("@INSIDE@", src_name).replace("@OUTSIDE@", "net_null1"))
    argv = [args.lockstep] + eal_common(args, f"bench-ls-{os.getpid()}") + v + ["--", "--config", cfg_path, "-i"]
    tag = abs(hash(config)) % 10000
    app = Prompt(argv, "lockstep> ", f"{args.out}/lockstep-{source}-{run}-{tag}.log")
    try:
        mpps = measure_mpps(app, args)
        lat = app.cmd("show latency")
        drops = app.cmd("show worker stats")
    finally:
        app.quit()
    # "  worker  lcore  bursts  p50  p99  p99.9  max"
    row = [l.split() for l in lat.splitlines() if re.match(r"\s+0\s+\d+\s+\d+", l)][0]
    if "drops total 0" not in drops:
        print(f"  note: {config.split('kind = ')[1].split()[0]} dropped packets: "
              + " ".join(l.strip() for l in drops.splitlines() if "drop " in l), flush=True)
    return {
        "mpps": mpps,
        "p50_ns": int(row[3]),
        "p99_ns": int(row[4]),
        "p999_ns": int(row[5]),
        "burst_count": int(row[2]),
    }


def telemetry(prefix, cmd):
    """One command on a DPDK process's telemetry socket (v2, JSON)."""
    import socket
    s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        s.connect(f"/var/run/dpdk/{prefix}/dpdk_telemetry.v2")
        s.recv(1024)  # the greeting
        s.send(cmd.encode())
        return json.loads(s.recv(1 << 16))
    finally:
        s.close()


def run_l3fwd(args, source, pcap, run):
    """DPDK's l3fwd (LPM) routing the pcap's flows to the sink: one lcore
    (1), which forwards; its rate is read from the sink's counters through
    the telemetry socket (l3fwd has no prompt)."""
    v, _ = vdevs(source, pcap)
    prefix = f"bench-l3-{os.getpid()}"
    os.makedirs(f"{args.out}/l3fwd-rules", exist_ok=True)
    v4, v6 = f"{args.out}/l3fwd-rules/v4.cfg", f"{args.out}/l3fwd-rules/v6.cfg"
    with open(v4, "w") as f:
        f.write("R10.10.2.0/24 1\nR10.10.1.0/24 0\n")
    with open(v6, "w") as f:
        f.write("R2001:db8::/32 0\n")
    eal = eal_common(args, prefix)
    eal[eal.index("-l") + 1] = "1"
    argv = [args.l3fwd] + eal + v + [
        "--", "-p", "0x3", "--config=(0,0,1),(1,0,1)", f"--rule_ipv4={v4}", f"--rule_ipv6={v6}",
        "--eth-dest=1,02:00:00:00:02:02", "--lookup=lpm", "--parse-ptype",
    ]
    log = open(f"{args.out}/l3fwd-{source}-{run}.log", "wb")
    p = subprocess.Popen(argv, stdout=log, stderr=log)
    sent = lambda: telemetry(prefix, "/ethdev/stats,1")["/ethdev/stats"]["opackets"]
    try:
        deadline = time.time() + 30
        while True:
            if p.poll() is not None:
                raise RuntimeError(f"l3fwd exited; see {log.name}")
            try:
                if sent() > 0:
                    break
            except (OSError, KeyError, ValueError):
                pass
            if time.time() > deadline:
                raise RuntimeError(f"l3fwd forwards nothing; see {log.name}")
            time.sleep(0.1)
        time.sleep(args.warmup)
        a, t0 = sent(), time.time()
        time.sleep(args.seconds)
        mpps = (sent() - a) / (time.time() - t0) / 1e6
    finally:
        p.send_signal(2)
        try:
            p.wait(30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        remove_runtime_dir(prefix)
    return {"mpps": mpps}


# The primary replicates every packet to a net_null replication port; the
# management link points at a peer that does not exist, so after listening
# for one dead interval it becomes primary alone.
LOCKSTEP_PRIMARY = """
[node]
id = 1
role = "primary"
[ports]
inside = "@INSIDE@"
outside = "@OUTSIDE@"
replication = "net_null2"
[dataplane]
workers = 1
burst = {burst}
mbufs = 32767
[function]
kind = "forward"
[management]
address = "127.0.0.1:{mport}"
peers = ["127.0.0.1:{pport}"]
key = "00112233445566778899aabbccddeeff"
"""

# The router and the NAT as the gateway: the pcap's frames go to the virtual
# MAC from 10.10.1.2 to 10.10.2.2 (1024 UDP flows); the next hop is a static
# neighbour, since the sink answers no ARP.
GATEWAY = """
[node]
id = 1
role = "{role}"
virtual_mac = "02:00:5e:00:01:01"
[ports]
inside = "@INSIDE@"
outside = "@OUTSIDE@"
{repl_port}
[dataplane]
workers = 1
burst = {burst}
mbufs = 32767
[function]
kind = "{kind}"
[router]
inside = "10.10.1.1/24"
outside = "10.10.2.1/24"
neighbors = [{{ ip = "10.10.2.2", mac = "02:00:00:00:02:02", port = "outside" }}]
{management}
"""

LOCKSTEP_FORWARD = """
[ports]
inside = "@INSIDE@"
outside = "@OUTSIDE@"
[dataplane]
workers = 1
burst = {burst}
mbufs = 16383
[function]
kind = "forward"
"""


def median(results):
    results = sorted(results, key=lambda x: x["mpps"])
    med = dict(results[len(results) // 2])
    med["runs_mpps"] = [round(x["mpps"], 3) for x in results]
    return med


def interleaved(cases, runs):
    """Runs every case once per round, `runs` rounds, so slow drifts of the
    machine hit all cases alike; returns the median result of each."""
    results = {name: [] for name, _ in cases}
    for r in range(runs):
        for name, fn in cases:
            results[name].append(fn(r))
    return {name: median(rs) for name, rs in results.items()}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lockstep", required=True)
    ap.add_argument("--pcap", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--seconds", type=float, default=5)
    ap.add_argument("--warmup", type=float, default=1)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--burst", type=int, default=32)
    ap.add_argument("--hugepages", action="store_true")
    ap.add_argument("--build", default="unknown")
    ap.add_argument("--l3fwd", help="DPDK's l3fwd binary: the reference router, beside the router cases")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)

    records = []
    cfg = LOCKSTEP_FORWARD.format(burst=args.burst)
    prim = LOCKSTEP_PRIMARY.format(burst=args.burst, mport=17000 + os.getpid() % 1000, pport=18000 + os.getpid() % 1000)
    repl_port = ["--vdev", "net_null2,no-rx=1"]
    mgmt = (f'[management]\naddress = "127.0.0.1:{17500 + os.getpid() % 400}"\n'
            f'peers = ["127.0.0.1:{18500 + os.getpid() % 400}"]\nkey = "00112233445566778899aabbccddeeff"')
    gw = {
        (kind, repl): GATEWAY.format(role="primary" if repl else "standalone", kind=kind, burst=args.burst,
                                     repl_port='replication = "net_null2"' if repl else "",
                                     management=mgmt if repl else "")
        for kind in ("router", "nat") for repl in (False, True)
    }
    for source in ["net_null", "net_pcap"]:
        cases = [
            ("testpmd-io", lambda r: run_testpmd(args, source, args.pcap, r)),
            ("lockstep-forward", lambda r: run_lockstep(args, source, args.pcap, r, cfg)),
            ("lockstep-primary-repl", lambda r: run_lockstep(args, source, args.pcap, r, prim, repl_port)),
        ]
        if source == "net_pcap":
            # net_null's frames are all zeros: a router only drops them.
            if args.l3fwd:
                cases.append(("l3fwd-lpm", lambda r: run_l3fwd(args, source, args.pcap, r)))
            for kind in ("router", "nat"):
                cases.append((f"lockstep-{kind}", lambda r, k=kind: run_lockstep(args, source, args.pcap, r, gw[(k, False)])))
                cases.append((f"lockstep-{kind}-repl", lambda r, k=kind: run_lockstep(args, source, args.pcap, r, gw[(k, True)], repl_port)))
        res = interleaved(cases, args.runs)
        tp = res["testpmd-io"]
        records.append({"name": "testpmd-io", "source": source, "mpps": round(tp["mpps"], 3),
                        "ratio": 1.0, "ns_per_pkt": round(1e3 / tp["mpps"], 2), "runs_mpps": tp["runs_mpps"]})
        for name, r in res.items():
            if name == "testpmd-io":
                continue
            records.append({"name": name, "source": source, "mpps": round(r["mpps"], 3),
                            "ratio": round(r["mpps"] / tp["mpps"], 3), "ns_per_pkt": round(1e3 / r["mpps"], 2),
                            **{k: r[k] for k in ("p50_ns", "p99_ns", "p999_ns") if k in r},
                            "runs_mpps": r["runs_mpps"]})

    result = {
        "build": args.build,
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "hugepages": args.hugepages,
        "burst": args.burst,
        "seconds": args.seconds,
        "runs": args.runs,
        "cores": "main lcore 0, forwarding lcore 1",
        "records": records,
    }
    for extra in ("nat_scale", "lpm"):
        p = f"{args.out}/{extra}.json"
        if os.path.exists(p):
            result[extra] = json.load(open(p))
    with open(f"{args.out}/results.json", "w") as f:
        json.dump(result, f, indent=2)

    print(f"\n{'case':<24} {'source':<9} {'Mpps':>8} {'ratio':>6} {'ns/pkt':>7} {'p50':>7} {'p99':>7} {'p99.9':>7}   (latency: per-burst rx->tx, ns)")
    for r in records:
        lat = f"{r.get('p50_ns', ''):>7} {r.get('p99_ns', ''):>7} {r.get('p999_ns', ''):>7}" if "p50_ns" in r else ""
        print(f"{r['name']:<24} {r['source']:<9} {r['mpps']:>8.2f} {r['ratio']:>6.2f} {r['ns_per_pkt']:>7.1f} {lat}")
    for source in ["net_null", "net_pcap"]:
        by = {r["name"]: r for r in records if r["source"] == source}
        if "lockstep-forward" in by and "lockstep-primary-repl" in by:
            step = by["lockstep-primary-repl"]["ns_per_pkt"] - by["lockstep-forward"]["ns_per_pkt"]
            result.setdefault("replication_step_ns_per_pkt", {})[source] = round(step, 2)
            print(f"replication step ({source}): {step:.1f} ns per packet")
    by = {r["name"]: r for r in records if r["source"] == "net_pcap"}
    if "l3fwd-lpm" in by:
        for name in ("lockstep-router", "lockstep-router-repl"):
            if name in by:
                ratio = by[name]["mpps"] / by["l3fwd-lpm"]["mpps"]
                result.setdefault("ratio_to_l3fwd", {})[name] = round(ratio, 3)
                print(f"{name} / l3fwd-lpm: {ratio:.2f}")
    with open(f"{args.out}/results.json", "w") as f:
        json.dump(result, f, indent=2)
    print(f"\nresults: {args.out}/results.json")


if __name__ == "__main__":
    sys.exit(main())
