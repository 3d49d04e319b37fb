#!/usr/bin/env bash
# The main job: the test bed up, a lockstep node between the client and the
# server, real traffic (ping, iperf3 TCP), and a report of what the
# endpoints saw, in text and in target/demo/report.json.
#
# Replication and failover are not built yet (issue 3): this demo runs one
# standalone `forward` node. It will become the failover demo.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=$ROOT/target/demo
mkdir -p "$OUT"

[ "$(id -u)" = 0 ] || { echo "demo.sh: needs root (network namespaces)" >&2; exit 1; }
scripts/setup.sh >/dev/null
echo "demo: building lockstep (release)"
cargo build --release --locked -p lockstep 2>&1 | tail -1
BIN=$ROOT/target/release/lockstep

export LS_PREFIX=ls- LS_NODES="primary backup"
PID=""
cleanup() {
    set +e
    [ -n "$PID" ] && kill -TERM "$PID" 2>/dev/null && sleep 1 && kill -9 "$PID" 2>/dev/null
    exec 3>&- 2>/dev/null
    rm -f "$OUT/primary.in"
    scripts/testbed.sh down
}
trap cleanup EXIT

echo "demo: test bed up (namespaces ls-client, ls-server, ls-primary, ls-backup, ls-sw)"
scripts/testbed.sh up --bump

rm -f "$OUT/primary.in"; mkfifo "$OUT/primary.in"
ip netns exec ls-primary "$BIN" -l 0,1 --no-huge -m 512 --no-pci --no-shconf --file-prefix=ls-demo-primary \
    --vdev net_af_packet0,iface=in0,framecnt=4096 --vdev net_af_packet1,iface=out0,framecnt=4096 \
    -- --config configs/forward-testbed.toml -i <"$OUT/primary.in" >"$OUT/primary.log" 2>&1 &
PID=$!
exec 3>"$OUT/primary.in"
for _ in $(seq 100); do grep -q 'lockstep> ' "$OUT/primary.log" && break; sleep 0.1; done
grep -q 'lockstep> ' "$OUT/primary.log" || { echo "demo: lockstep did not start:"; cat "$OUT/primary.log"; exit 1; }
echo "demo: lockstep running in ls-primary (pid $PID)"

echo "demo: 20 pings ls-client -> ls-server"
ping_out=$(ip netns exec ls-client ping -c 20 -i 0.05 -W 2 10.10.2.2 | tail -2)
echo "$ping_out"
ping_rx=$(echo "$ping_out" | sed -n 's/.* \([0-9]*\) received.*/\1/p')
ping_rtt=$(echo "$ping_out" | sed -n 's/.*= [0-9.]*\/\([0-9.]*\)\/.*/\1/p')

echo "demo: iperf3 TCP, 5 s"
ip netns exec ls-server iperf3 -s -1 -p 5201 >/dev/null 2>&1 &
IPERF_S=$!
sleep 0.5
ip netns exec ls-client iperf3 -c 10.10.2.2 -p 5201 -t 5 -J >"$OUT/iperf3.json" || true
wait $IPERF_S 2>/dev/null || true

echo "show port stats all" >&3
echo "show latency" >&3
echo "quit" >&3
exec 3>&-
wait "$PID" || true
PID=""

python3 - "$OUT" "$ping_rx" "$ping_rtt" <<'PY'
import json, re, sys
out, ping_rx, ping_rtt = sys.argv[1], int(sys.argv[2] or 0), float(sys.argv[3] or 0)
ip = json.load(open(f"{out}/iperf3.json"))
end = ip.get("end", {})
tcp = {
    "completed": "error" not in ip,
    "error": ip.get("error"),
    "gbit_per_s": round(end.get("sum_received", {}).get("bits_per_second", 0) / 1e9, 3),
    "bytes": end.get("sum_received", {}).get("bytes", 0),
    "retransmits": end.get("sum_sent", {}).get("retransmits"),
}
log = open(f"{out}/primary.log").read()
final = log.split("Final statistics:")[-1]
ports = {}
for m in re.finditer(r"NIC statistics for port \d+ \((\w+): [^)]*\).*?RX-packets: (\d+).*?TX-packets: (\d+)", final, re.S):
    ports[m.group(1)] = {"rx_packets": int(m.group(2)), "tx_packets": int(m.group(3))}
report = {
    "function": "forward",
    "nodes": 1,
    "failover": "not built yet (issue 3)",
    "ping": {"sent": 20, "received": ping_rx, "lost": 20 - ping_rx, "avg_rtt_ms": ping_rtt},
    "iperf3_tcp": tcp,
    "lockstep_ports": ports,
}
json.dump(report, open(f"{out}/report.json", "w"), indent=2)
print("\n==================== what the receiver saw ====================")
print(f"  ping      : {ping_rx}/20 replies, {20 - ping_rx} lost, avg rtt {ping_rtt} ms")
print(f"  iperf3 TCP: {'completed' if tcp['completed'] else 'FAILED: ' + str(tcp['error'])}, "
      f"{tcp['gbit_per_s']} Gbit/s, {tcp['retransmits']} retransmits")
for role, p in ports.items():
    print(f"  lockstep {role:<8}: rx {p['rx_packets']:>9}  tx {p['tx_packets']:>9}")
print(f"  report    : {out}/report.json")
PY
