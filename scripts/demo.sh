#!/usr/bin/env bash
# Runs the whole pipeline on this machine: a local nats-server, the bundled tracepoint
# simulator standing in for bitcoind, ebpf-publisher, and ebpf-loader as user 'nobody' with
# only CAP_BPF and CAP_PERFMON. Prints the events as they arrive on NATS.
#   DEMO_EVENTS=N   stop after N events (default 40)
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ $(id -u) != 0 ]]; then
  echo "error: run as root: the demo loads BPF programs and drops to user 'nobody'" >&2
  exit 1
fi
scripts/install-deps.sh
cargo build --workspace --bins
events=${DEMO_EVENTS:-40}

work=$(mktemp -d /tmp/ebpf-extractor-demo.XXXXXX)
chmod 755 "$work"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -INT "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
# The loader runs as 'nobody': give it copies it can read and run wherever the checkout is.
for bin in ebpf-loader ebpf-publisher tracepoint-simulator event-tail; do
  install -m 755 "target/debug/$bin" "$work/$bin"
done

echo "max_payload: 5242880" > "$work/nats.conf"
nats-server -a 127.0.0.1 -p -1 -c "$work/nats.conf" --ports_file_dir "$work" >/dev/null 2>&1 &
pids+=($!)
for _ in $(seq 100); do ls "$work"/nats-server_*.ports >/dev/null 2>&1 && break; sleep 0.1; done
nats=$(grep -o 'nats://[^"]*' "$work"/nats-server_*.ports | head -1 | sed 's|nats://||')
echo "== nats-server on $nats"

"$work/ebpf-publisher" --nats-address "$nats" --socket "$work/publisher.sock" --socket-mode 666 \
  --loader-uid "$(id -u nobody)" &
pids+=($!)
for _ in $(seq 100); do [[ -S $work/publisher.sock ]] && break; sleep 0.1; done

"$work/tracepoint-simulator" --tracepoints default --count 0 --rate 2 > "$work/simulator.out" &
sim=$!
pids+=($sim)
echo "== simulator (pid $sim) fires Bitcoin Core's 12 default tracepoints twice a second"

setpriv --reuid=nobody --regid=nogroup --clear-groups \
  --inh-caps=-all,+bpf,+perfmon --ambient-caps=-all,+bpf,+perfmon --bounding-set=-all,+bpf,+perfmon \
  -- "$work/ebpf-loader" --bitcoind-path "$work/tracepoint-simulator" --bitcoind-pid "$sim" \
  --socket "$work/publisher.sock" &
pids+=($!)

echo "== first $events events on NATS:"
timeout 60 "$work/event-tail" --nats-address "$nats" --count "$events"
kill -INT "$sim"
wait "$sim" || true
echo "== simulator counts (fired while traced):"
cat "$work/simulator.out"
