#!/usr/bin/env bash
# Runs each fuzz target (fuzz/fuzz_targets) for FUZZ_SECONDS (default 20) and prints how many
# inputs it tried. Needs the nightly toolchain; installs cargo-fuzz if missing. A crash stops
# with the input in fuzz/artifacts/<target>/: turn it into a regression test.
#   FUZZ_SECONDS=3600 scripts/fuzz.sh [TARGET...]   # run longer, or only some targets
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${FUZZ_SECONDS:-20}
if ! rustup run nightly rustc --version >/dev/null 2>&1; then
  echo "error: the fuzz targets need the nightly toolchain (rustup toolchain install nightly)" >&2
  exit 1
fi
command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz
targets=("$@")
((${#targets[@]})) || targets=(ipc_frame record p2p_payload)
for target in "${targets[@]}"; do
  log=$(mktemp)
  cargo +nightly fuzz run --fuzz-dir fuzz "$target" -- -max_total_time="$seconds" 2>"$log" || { tail -40 "$log" >&2; exit 1; }
  runs=$(grep -o 'Done [0-9]* runs' "$log" | grep -o '[0-9]*' || echo "?")
  echo "fuzz: $target: $runs executions in ${seconds}s, no crash"
  rm -f "$log"
done
