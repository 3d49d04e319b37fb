#!/usr/bin/env bash
# Installs what lockstep needs on Debian 12 and reserves 2 MB hugepages when
# the machine allows. Idempotent: installs only what is missing.
#
#   scripts/setup.sh            packages + hugepages (best effort)
#   LS_SETUP_HUGEPAGES=0 ...    skip hugepages (tests run with --no-huge)
set -euo pipefail

PKGS=(
    # DPDK from Debian, and what bindgen needs to read its headers
    dpdk dpdk-dev libdpdk-dev pkg-config clang libclang-dev
    # the test bed and its traffic tools
    iproute2 iputils-ping ethtool iperf3 python3-scapy tshark tcpdump procps
    # the classic HA baseline the failover benchmark compares against
    keepalived conntrackd conntrack
)

missing=()
for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing ${missing[*]}"
    SUDO=""
    [ "$(id -u)" = 0 ] || SUDO=sudo
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

pkg-config --atleast-version=22.11 libdpdk || { echo "setup: libdpdk >= 22.11 not found" >&2; exit 1; }

if ! command -v cargo >/dev/null 2>&1; then
    echo "setup: cargo not found; install Rust (rustup) first" >&2
    exit 1
fi

# Hugepages: twice the forwarding rate (FACTS.md). Tests do not need them.
if [ "${LS_SETUP_HUGEPAGES:-1}" = 1 ] && [ "$(id -u)" = 0 ]; then
    mkdir -p /dev/hugepages
    mountpoint -q /dev/hugepages || mount -t hugetlbfs -o pagesize=2M nodev /dev/hugepages 2>/dev/null || true
    hp=/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages
    if [ -w "$hp" ] && [ "$(cat "$hp")" -lt 1024 ]; then
        echo 1024 > "$hp" 2>/dev/null || true
    fi
    if [ -r "$hp" ] && [ "$(cat "$hp")" -ge 512 ] && mountpoint -q /dev/hugepages; then
        echo "setup: $(cat "$hp") x 2 MB hugepages ready"
    else
        echo "setup: no hugepages here; everything runs with --no-huge"
    fi
fi
echo "setup: ok"
