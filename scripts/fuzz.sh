#!/usr/bin/env bash
# Fuzzes every wire parser with cargo fuzz (libFuzzer + AddressSanitizer).
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET]    default 60
#
# The machine's toolchain is stable; cargo fuzz needs nightly flags, which
# RUSTC_BOOTSTRAP=1 unlocks on stable. Crashes land in fuzz/artifacts/; turn
# each into a regression test in dataplane/src/fuzzing.rs.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
export RUSTC_BOOTSTRAP=1
secs=${1:-60}
for t in $(cargo fuzz list); do
    echo "fuzz: $t for ${secs}s"
    cargo fuzz run "$t" -- -max_total_time="$secs" 2>&1 | grep -E '^Done|SUMMARY|panicked' || true
done
