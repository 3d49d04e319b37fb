#!/usr/bin/env bash
# The whole test suite: setup, build once, unit tests, DPDK tests, then the
# end-to-end tests on the test bed (one at a time: each runs a busy lockstep
# and its own namespaces).
#
#   scripts/test.sh            everything
#   LS_TEST_QUICK=1 ...        skip clippy/rustfmt checks
set -euo pipefail
cd "$(dirname "$0")/.."

[ "$(id -u)" = 0 ] || { echo "test.sh: needs root (network namespaces, DPDK vdevs)" >&2; exit 1; }

scripts/setup.sh

# Leftovers of an interrupted earlier run (our prefixes only).
for ns in $(ip netns list | awk '{print $1}' | grep -E '^lt[0-9]+-' || true); do ip netns del "$ns" || true; done

step() { printf '\n=== %s\n' "$*"; }

step "build"
cargo build --workspace --all-targets --locked

if [ "${LS_TEST_QUICK:-0}" != 1 ]; then
    step "rustfmt and clippy"
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets --locked -- -D warnings
fi

step "unit tests and DPDK tests (dataplane, control)"
cargo test --workspace --exclude lockstep --locked

step "lockstep: unit, config, telemetry and end-to-end tests"
cargo test -p lockstep --locked -- --test-threads=1

# EAL runtime directories the test processes could not remove: the DPDK
# test binaries keep their EAL in a static (never dropped), nodes killed
# with -9 never clean up. Only ours (ls-<test>-<pid>, lt<pid>-...), and only
# when that process is gone.
for d in /var/run/dpdk/ls-*-[0-9]* /var/run/dpdk/lt[0-9]*-*; do
    [ -d "$d" ] || continue
    b=${d##*/}
    case $b in
        lt*) pid=${b#lt}; pid=${pid%%-*} ;;
        *) pid=${b##*-} ;;
    esac
    if [[ $pid =~ ^[0-9]+$ ]] && ! kill -0 "$pid" 2>/dev/null; then
        rm -rf "$d"
    fi
done
step "all tests passed"
