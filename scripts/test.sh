#!/usr/bin/env bash
# Installs what is needed and runs every test, end-to-end ones included (they load BPF
# programs and switch users, so this runs as root).
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ $(id -u) != 0 ]]; then
  echo "error: run as root: the end-to-end tests load BPF programs and run the loader as 'nobody'" >&2
  exit 1
fi
scripts/install-deps.sh
# The end-to-end tests run the workspace's binaries, so build them first.
cargo build --workspace --bins
cargo test --workspace
