#!/usr/bin/env bash
# The main job: the failover demo.
#
#   scripts/demo.sh [forward|router|nat]     (default: forward)
#
# Test bed up; a primary and a backup lockstep (`forward`) between ls-client
# and ls-server; a sequence-numbered UDP stream (20 kpps), ping and an iperf3
# TCP run through them; `kill -9` of the primary mid-stream; the old primary
# restarted (it rejoins as backup). Then what the receiver saw: packets lost,
# duplicated, reordered, the longest gap, whether TCP survived; also written
# to target/demo/report.json.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=$ROOT/target/demo
rm -rf "$OUT"
mkdir -p "$OUT"

[ "$(id -u)" = 0 ] || { echo "demo.sh: needs root (network namespaces)" >&2; exit 1; }
scripts/setup.sh >/dev/null
echo "demo: building lockstep (release)"
cargo build --release --locked -p lockstep 2>&1 | tail -1
BIN=$ROOT/target/release/lockstep

FUNCTION=${1:-forward}
case $FUNCTION in forward|router|nat) ;; *) echo "usage: $0 [forward|router|nat]" >&2; exit 2 ;; esac
# The node configs: configs/failover-*.toml, with the function swapped in.
for node in primary backup; do
    sed "s/^kind = \"forward\"/kind = \"$FUNCTION\"/" "configs/failover-$node.toml" >"$OUT/$node.toml"
    if [ "$FUNCTION" != forward ]; then
        printf '\n[router]\ninside = "10.10.1.1/24"\noutside = "10.10.2.1/24"\n' >>"$OUT/$node.toml"
    fi
done

export LS_PREFIX=ls- LS_NODES="primary backup"
PIDS=()
cleanup() {
    set +e
    for fd in 5 6 7; do eval "exec $fd>&-" 2>/dev/null; done
    for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done
    sleep 1
    for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null; done
    # A node killed with -9 cannot remove its EAL runtime directory.
    rm -rf /var/run/dpdk/ls-demo-primary /var/run/dpdk/ls-demo-backup /var/run/dpdk/ls-demo-primary-restarted
    scripts/testbed.sh down
}
trap cleanup EXIT

# start NAME CONFIG TAG FD: a lockstep in namespace ls-NAME, prompt on fd FD.
start() {
    local name=$1 cfg=$2 tag=$3 fd=$4
    mkfifo "$OUT/$tag.in"
    ip netns exec "ls-$name" "$BIN" -l 0,1 --no-huge -m 512 --no-pci --no-shconf --file-prefix="ls-demo-$tag" \
        --vdev net_af_packet0,iface=in0,framecnt=4096 --vdev net_af_packet1,iface=out0,framecnt=4096 \
        --vdev net_af_packet2,iface=rep0,framecnt=4096 \
        -- --config "$cfg" -i <"$OUT/$tag.in" >"$OUT/$tag.log" 2>&1 &
    PIDS+=($!)
    disown $!
    eval "exec $fd>\"$OUT/$tag.in\""
    echo $! >"$OUT/$tag.pid"
}
role() { # LOG: the role in the node's latest log line about it
    grep -oE "node [0-9]+ (is|becomes|steps down to) (primary|backup)" "$1" | tail -1 | awk '{print $NF}'
}
wait_role() { # LOG ROLE
    for _ in $(seq 100); do [ "$(role "$1")" = "$2" ] && return 0; sleep 0.1; done
    echo "demo: $1 never became $2"; tail -20 "$1"; exit 1
}

echo "demo: test bed up (ls-client, ls-server, ls-primary, ls-backup; bridges in ls-sw)"
if [ "$FUNCTION" = forward ]; then
    scripts/testbed.sh up --bump   # a bump in the wire: the endpoints talk on-link
else
    scripts/testbed.sh up          # lockstep is the gateway of both segments
fi
# The backup first, so it follows the stream from its first packet (one
# started later is brought into sync by the primary's checkpoint, or for
# forward joins the stream: the restarted old primary below does that).
start backup "$OUT/backup.toml" backup 6
wait_role "$OUT/backup.log" backup
start primary "$OUT/primary.toml" primary 5
wait_role "$OUT/primary.log" primary
for _ in $(seq 100); do grep -q "follows node 1" "$OUT/backup.log" && break; sleep 0.05; done
grep -q "follows node 1" "$OUT/backup.log" || { echo "demo: the backup never heard the primary"; tail -20 "$OUT/backup.log"; exit 1; }
echo "demo: node 1 primary in ls-primary, node 2 backup in ls-backup, function $FUNCTION"
# Resolve the neighbours first (a router drops the first packet to an
# unresolved next hop while it asks for it).
ip netns exec ls-client ping -c 2 -i 0.2 -W 1 10.10.2.2 >/dev/null || true

echo "demo: traffic for 8 s: UDP stream 20 kpps, ping every 50 ms, iperf3 TCP 200 Mbit/s"
ip netns exec ls-server python3 scripts/udpstream.py recv 9000 --idle 2 --out "$OUT/udp.json" --sent "$OUT/udp-sent.json" >/dev/null &
RECV=$!
ip netns exec ls-server iperf3 -s -1 -p 5201 >/dev/null 2>&1 &
IPERF_S=$!
sleep 0.5
ip netns exec ls-client iperf3 -c 10.10.2.2 -p 5201 -t 8 -b 200M -J >"$OUT/iperf3.json" 2>/dev/null &
IPERF_C=$!
ip netns exec ls-client ping -c 160 -i 0.05 -W 1 10.10.2.2 >"$OUT/ping.txt" 2>&1 &
PING=$!
ip netns exec ls-client python3 scripts/udpstream.py send 10.10.2.2 9000 --rate 20000 --seconds 8 >"$OUT/udp-sent.json" &
SEND=$!

sleep 3
echo "demo: kill -9 of the primary (pid $(cat "$OUT/primary.pid"))"
kill -9 "$(cat "$OUT/primary.pid")"
sleep 2
echo "demo: node 2 is now $(role "$OUT/backup.log"); restarting the old primary"
exec 5>&-
start primary "$OUT/primary.toml" primary-restarted 7
wait_role "$OUT/primary-restarted.log" backup
echo "demo: the old primary rejoined as $(role "$OUT/primary-restarted.log")"

wait $SEND $PING $IPERF_C $RECV 2>/dev/null || true
wait $IPERF_S 2>/dev/null || true
echo "show sync" >&6
echo "show sync" >&7
sleep 0.5
echo "quit" >&6
echo "quit" >&7
exec 6>&- 7>&-
sleep 2

python3 - "$OUT" "$FUNCTION" <<'PY'
import json, re, sys
out = sys.argv[1]
udp = json.load(open(f"{out}/udp.json"))
ip = json.load(open(f"{out}/iperf3.json"))
ping = open(f"{out}/ping.txt").read()
m = re.search(r"(\d+) packets transmitted, (\d+) received", ping)
ping_tx, ping_rx = (int(m.group(1)), int(m.group(2))) if m else (0, 0)
end = ip.get("end", {})
tcp = {
    "survived": "error" not in ip and end.get("sum_received", {}).get("bytes", 0) > 0,
    "error": ip.get("error"),
    "bytes": end.get("sum_received", {}).get("bytes", 0),
    "mbit_per_s": round(end.get("sum_received", {}).get("bits_per_second", 0) / 1e6, 1),
    "retransmits": end.get("sum_sent", {}).get("retransmits"),
}
blog = open(f"{out}/backup.log").read()
take = re.search(r"TAKEOVER: .*last heartbeat from the old primary ([\d.]+) ms ago, last replication frame ([\d.]+) ms ago", blog)
done = re.search(r"TAKEOVER done ([\d.]+) ms after detection: (\d+) shadow packets resent, (\d+) unreplicated packets processed", blog)
egress = re.search(r"TAKEOVER (?:done .*)?first egress ([\d.]+) ms after detection", blog)
rlog = open(f"{out}/primary-restarted.log").read()
report = {
    "function": sys.argv[2],
    "udp_stream": udp,
    "ping": {"sent": ping_tx, "received": ping_rx, "lost": ping_tx - ping_rx},
    "tcp": tcp,
    "takeover": {
        "detection_ms_after_last_heartbeat": float(take.group(1)) if take else None,
        "detection_ms_after_last_replication_frame": float(take.group(2)) if take else None,
        "done_ms_after_detection": float(done.group(1)) if done else None,
        "first_egress_ms_after_detection": float(egress.group(1)) if egress else None,
        "shadow_resent": int(done.group(2)) if done else None,
        "unreplicated_processed": int(done.group(3)) if done else None,
    },
    "old_primary_rejoined_as": "backup" if "is backup" in rlog else "unknown",
    # forward keeps no state: the restarted node joins the new primary's
    # stream; a router's or a NAT's installs the new primary's checkpoint.
    # Its last word on it counts: a late node first logs the gap, then the
    # checkpoint (or the join) that brought it back.
    "old_primary_synchronized": (re.findall(r"this backup is (synchronized|no longer synchronized)", rlog)
                                 or ["none"])[-1] == "synchronized",
}
joined = re.search(r"joined the primary's stream at sequence (\d+)", rlog)
checkpointed = re.search(r"installed the primary's state checkpointed at sequence (\d+)", rlog)
json.dump(report, open(f"{out}/report.json", "w"), indent=2)
print(f"\n==================== what the receiver saw ({sys.argv[2]}) ====================")
print(f"  UDP stream : {udp['sent']} sent, {udp['unique']} received, {udp['lost']} lost, "
      f"{udp['duplicates']} duplicated, {udp['reordered']} reordered, longest gap {udp['longest_gap_ms']} ms")
print(f"  ping       : {ping_rx}/{ping_tx} replies")
print(f"  TCP iperf3 : {'survived' if tcp['survived'] else 'FAILED: ' + str(tcp['error'])}, "
      f"{tcp['mbit_per_s']} Mbit/s, {tcp['retransmits']} retransmits")
t = report["takeover"]
print(f"  takeover   : detected {t['detection_ms_after_last_heartbeat']} ms after the last heartbeat, "
      f"{t['detection_ms_after_last_replication_frame']} ms after the last replication frame; first egress "
      f"{t['first_egress_ms_after_detection']} ms after detection; "
      f"{t['shadow_resent']} packets resent from the shadow ring, {t['unreplicated_processed']} unreplicated packets processed")
how = (f" (joined the stream at sequence {joined.group(1)})" if joined
       else f" (installed the new primary's checkpoint of sequence {checkpointed.group(1)})" if checkpointed else "")
sync = "synchronized" + how if report["old_primary_synchronized"] else "not synchronized"
if checkpointed:
    report["old_primary_checkpointed_at"] = int(checkpointed.group(1))
    json.dump(report, open(f"{out}/report.json", "w"), indent=2)
print(f"  old primary: rejoined as {report['old_primary_rejoined_as']}, {sync}")
print(f"  report     : {out}/report.json")
PY
