#!/usr/bin/env bash
# Installs what is needed and runs every test, end-to-end ones included (they load BPF
# programs and switch users, so this runs as root).
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ $(id -u) != 0 ]]; then
  echo "error: run as root: the end-to-end tests load BPF programs and run the loader as 'nobody'" >&2
  exit 1
fi
scripts/install-deps.sh --tests
# The end-to-end tests run the workspace's binaries, so build them first.
cargo fmt --all --check
(cd fuzz && cargo fmt --check)
cargo build --workspace --bins
cargo clippy --workspace --all-targets -- -D warnings
# Each fuzz target for a short, bounded time (scripts/fuzz.sh runs them longer).
scripts/fuzz.sh
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --workspace 2>&1 | tee "$log"
# One closing line over every test binary (cargo prints one summary per binary).
awk '/^test result:/ { p += $4; f += $6 } END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
