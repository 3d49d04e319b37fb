#!/usr/bin/env bash
# Throughput benchmark: dpdk-testpmd io forwarding, DPDK's l3fwd (LPM) and
# lockstep (forward, forward with replication, router, NAT), same vdevs,
# same pinned cores (main lcore 0, one forwarding lcore 1), in one run, from
# two sources: net_null (framework cost) and net_pcap replaying a generated
# 64-byte UDP pcap (real packets), into net_null sinks. Prints Mpps, the ratio
# to testpmd, ns per packet and lockstep's per-burst latency percentiles;
# writes target/bench/results.json.
#
#   scripts/bench.sh                 5 interleaved runs x 5 s per case, median
#   BENCH_RUNS=1 BENCH_SECONDS=2 ... quicker
#   scripts/bench.sh failover        the failover benchmark (benches/tools/failover.py):
#                                    20 kill -9 runs per timer setting, keepalived +
#                                    conntrackd on the same test bed, a 10-minute soak
#                                    (FAILOVER_RUNS, FAILOVER_SOAK to change)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=$ROOT/target/bench
mkdir -p "$OUT"

[ "$(id -u)" = 0 ] || { echo "bench.sh: needs root" >&2; exit 1; }
scripts/setup.sh >/dev/null
cargo build --release --locked -p lockstep -p benches 2>&1 | tail -1

if [ "${1:-}" = failover ]; then
    exec python3 benches/tools/failover.py --lockstep "$ROOT/target/release/lockstep" --out "$OUT/failover" \
        --runs "${FAILOVER_RUNS:-20}" --soak "${FAILOVER_SOAK:-600}"
fi

HUGE=()
hp=/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages
if mountpoint -q /dev/hugepages && [ -r $hp ] && [ "$(cat $hp)" -ge 1024 ]; then
    HUGE=(--hugepages)
else
    echo "bench: no hugepages; running with --no-huge (about half the rate, FACTS.md)"
fi

[ -f "$OUT/udp64.pcap" ] || /usr/bin/python3 benches/tools/gen_pcap.py udp64 "$OUT/udp64.pcap" 1024

echo "bench: NAT with a million sessions (one core, no NIC)"
taskset -c 1 "$ROOT/target/release/nat_scale" 1000000 10000000 | tee "$OUT/nat_scale.json"
echo "bench: what the router and the NAT cost per packet without I/O (fast and general paths, 1024 flows)"
taskset -c 1 "$ROOT/target/release/fn_cost" 1024 10000000 2>/dev/null | tee "$OUT/fn_cost.json"
echo "bench: rte_lpm against the Rust route table (10 000 routes)"
taskset -c 1 "$ROOT/target/release/lpm" 10000 10000000 2>/dev/null | tee "$OUT/lpm.json"

echo "bench: how fast a backup follows the replication stream (one core, net_ring)"
BD_ARGS=()
[ ${#HUGE[@]} -eq 0 ] && BD_ARGS=(--no-huge)
"$ROOT/target/release/backup_drain" 4194304 5 "${BD_ARGS[@]}" 2>/dev/null | tee "$OUT/backup_drain.json"

echo "bench: a primary and its backup on the two cores (net_pcap source, net_ring link)"
"$ROOT/target/release/pair" "$OUT/udp64.pcap" 3 "${BENCH_RUNS:-5}" "${BD_ARGS[@]}" 2>/dev/null | tee "$OUT/pair.json"

echo "bench: how long a checkpoint brings a late NAT backup into sync (100 000 and 1 000 000 sessions;"
echo "       then 8192 flows in use, more than a round's changes can shrink below)"
[ -f "$OUT/udp64_8k.pcap" ] || /usr/bin/python3 benches/tools/gen_pcap.py udp64 "$OUT/udp64_8k.pcap" 8192
for run in "udp64.pcap 100000" "udp64.pcap 1000000" "udp64_8k.pcap 100000"; do
    set -- $run
    "$ROOT/target/release/checkpoint" "$OUT/$1" "$2" "${BENCH_RUNS:-5}" "${BD_ARGS[@]}" 2>/dev/null
done | tee "$OUT/checkpoint.json"

# DPDK's own router on the same vdevs: what a router's ratio can be here.
# Optional: without dpdk-doc (no package mirror) the rest still runs.
L3FWD=()
if l3fwd=$(benches/tools/build_l3fwd.sh "$OUT/l3fwd-src"); then
    L3FWD=(--l3fwd "$l3fwd")
else
    echo "bench: DPDK's l3fwd could not be built; running without it"
fi

python3 benches/tools/compare.py --lockstep "$ROOT/target/release/lockstep" --pcap "$OUT/udp64.pcap" \
    "${L3FWD[@]}" \
    --out "$OUT" --runs "${BENCH_RUNS:-5}" --seconds "${BENCH_SECONDS:-5}" \
    --build "$(git describe --always --dirty 2>/dev/null || echo unknown)" "${HUGE[@]}"
