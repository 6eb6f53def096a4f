#!/usr/bin/env bash
# Runs the benchmark (as root) from a release build and prints one Markdown table: every
# workload of issue #6 through nats-server, simulator, loader, publisher and a subscriber.
#   scripts/bench.sh [--seconds N] [--only NAME]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cargo build --release --workspace --bins
exec target/release/bench "$@"
