#!/usr/bin/env bash
# Runs the whole pipeline on this machine: a local nats-server, the bundled tracepoint
# simulator standing in for bitcoind (as its own user, with a private pid file), and the seed's
# one command, ebpf-extractor, which runs ebpf-publisher without capabilities and ebpf-loader
# with only CAP_BPF and CAP_PERFMON. Prints the events as they arrive on NATS, one line each as
# a Bitcoin user reads them (event-tail; --json gives JSON).
#   DEMO_EVENTS=N   stop after N events (default 40)
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ $(id -u) != 0 ]]; then
  echo "error: run as root: the demo loads BPF programs and runs each process as a user of its own" >&2
  exit 1
fi
scripts/install-deps.sh
cargo build --workspace --bins
events=${DEMO_EVENTS:-40}

work=$(mktemp -d /tmp/ebpf-extractor-demo.XXXXXX)
chmod 755 "$work"
# However the demo ends (done, an error, Ctrl-C), its processes stop one after the other: the
# extractor first, whose loader hands on what its rings hold and whose publisher then flushes to
# NATS; then the node; NATS last. Stopped together, or NATS first, the publisher would be left
# retrying a server that is gone ("client error: nats: IO error", "NATS did not take the
# buffered events within 5 s") and the loader would see its node exit. So the connections the
# node closes as it stops go untraced here (`traced_at_shutdown=0`), where the systemd units
# order the loader before bitcoind to see them (README, "Install with systemd"). Each runs in a
# session of its own (setsid) so that a Ctrl-C at the terminal reaches only this script and
# event-tail.
extractor='' sim='' nats_server=''
stop() {
  local pid
  for pid in "$extractor" "$sim" "$nats_server"; do
    [[ -n $pid ]] || continue
    kill -INT "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  extractor='' sim='' nats_server=''
}
trap 'stop; rm -rf "$work"' EXIT
trap 'exit 130' INT TERM
# Copies every user can run, wherever the checkout is (the launcher runs its siblings).
for bin in ebpf-extractor ebpf-loader ebpf-publisher tracepoint-simulator event-tail; do
  install -m 755 "target/debug/$bin" "$work/$bin"
done

echo "max_payload: 5242880" > "$work/nats.conf"
setsid nats-server -a 127.0.0.1 -p -1 -c "$work/nats.conf" --ports_file_dir "$work" >/dev/null 2>&1 &
nats_server=$!
for _ in $(seq 100); do ls "$work"/nats-server_*.ports >/dev/null 2>&1 && break; sleep 0.1; done
nats=$(grep -o 'nats://[^"]*' "$work"/nats-server_*.ports | head -1 | sed 's|nats://||')
echo "== nats-server on $nats"

# The node as Bitcoin Core deploys itself: as a user of its own, files created under umask 077
# (its pid file 0600 in a 0700 directory). uid 60999 has no account: nothing is created.
node_uid=60999
install -d -m 700 -o "$node_uid" -g "$node_uid" "$work/node"
setsid setpriv --reuid="$node_uid" --regid="$node_uid" --clear-groups -- \
  "$work/tracepoint-simulator" -datadir="$work/node" -regtest --tracepoints default --count 0 --rate 2 \
  > "$work/simulator.out" &
sim=$!
pid_file=$work/node/regtest/bitcoind.pid
for _ in $(seq 100); do [[ -s $pid_file ]] && break; sleep 0.1; done
echo "== simulator (pid $sim, user $node_uid, pid file $pid_file) fires Bitcoin Core's 12 default tracepoints twice a second"

# The seed's one command, as README gives it: it reads the private pid file as root and runs
# the publisher and the loader each under a uid of its own.
setsid "$work/ebpf-extractor" --nats-address "$nats" --bitcoind-path "$work/tracepoint-simulator" \
  --bitcoind-pid-file "$pid_file" --log-level info &
extractor=$!

echo "== first $events events on NATS:"
# --foreground: a Ctrl-C reaches event-tail too, instead of only when the 60 s are over.
timeout --foreground 60 "$work/event-tail" --nats-address "$nats" --count "$events"
stop
echo "== simulator counts (fired while traced):"
cat "$work/simulator.out"
