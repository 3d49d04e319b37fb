#!/usr/bin/env bash
# Builds DPDK's own l3fwd (Debian's dpdk-doc ships the example sources of
# the same 22.11 release) as the reference router of the throughput
# benchmark: the rate a DPDK router reaches on these vdevs says what a ratio
# to testpmd io can be at all.
#
# One change, and only for these vdevs: l3fwd asks the port for RX checksum
# offload, which net_pcap and net_null do not have, so it would refuse to
# start. The request is removed; l3fwd verifies no IPv4 checksum in
# software either (it leaves that to the NIC), so on the vdevs it checks
# none — lockstep's router does verify every header.
#
#   benches/tools/build_l3fwd.sh OUTDIR    prints the binary's path
set -euo pipefail
out=${1:?usage: build_l3fwd.sh OUTDIR}
src=/usr/share/dpdk/examples
if [ ! -f $src/l3fwd/main.c ]; then
    echo "build_l3fwd: installing dpdk-doc (DPDK's example sources)" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq --no-install-recommends dpdk-doc >/dev/null 2>&1 ||
        { apt-get update -qq && apt-get install -y -qq --no-install-recommends dpdk-doc >/dev/null; }
fi
bin=$out/l3fwd/build/l3fwd
if [ ! -x "$bin" ] || [ $src/l3fwd/main.c -nt "$bin" ]; then
    rm -rf "$out"
    mkdir -p "$out"
    cp -r $src/l3fwd $src/common "$out"/
    grep -q '\.offloads = RTE_ETH_RX_OFFLOAD_CHECKSUM,' "$out/l3fwd/main.c" || {
        echo "build_l3fwd: l3fwd's RX offload request not found; not patching blindly" >&2
        exit 1
    }
    sed -i 's/\.offloads = RTE_ETH_RX_OFFLOAD_CHECKSUM,/.offloads = 0,/' "$out/l3fwd/main.c"
    make -s -C "$out/l3fwd" -j2 >&2
fi
echo "$bin"
