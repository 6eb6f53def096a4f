#!/usr/bin/env bash
# Installs what building and running the extractor needs on Debian (run as root).
set -euo pipefail

packages=(
  build-essential      # cc, make and the linker that cargo and libbpf-sys's build use
  clang                # compiles the BPF programs
  libelf-dev zlib1g-dev pkg-config  # libbpf (built from source by libbpf-sys)
  systemtap-sdt-dev    # sys/sdt.h for the tracepoint simulator
  protobuf-compiler    # protoc for peer-observer's .proto files
  nats-server          # local NATS for the demo and the tests
  binutils             # readelf, to check the simulator's probes
  util-linux           # setpriv, to run the loader unprivileged
  systemd              # systemd-analyze and systemd-socket-activate, for the unit tests
  debootstrap systemd-container debian-archive-keyring gpgv  # a Debian system booted with systemd as pid 1, for the units' test under systemd
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "installing: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# With --tests, promtool too, for the alerting rules' tests (publisher/tests/monitoring.rs):
# taken out of Debian's prometheus package rather than installing it, which would set up and
# start a Prometheus server.
if [[ ${1-} == --tests ]] && ! command -v promtool >/dev/null; then
  echo "installing: promtool (from the prometheus package)"
  tmp=$(mktemp -d)
  apt-get update -qq
  (cd "$tmp" && apt-get download -qq -o APT::Sandbox::User=root prometheus && dpkg-deb -x prometheus_*.deb root)
  install -m 755 "$tmp/root/usr/bin/promtool" /usr/local/bin/promtool
  rm -rf "$tmp"
fi
if ! command -v cargo >/dev/null; then
  echo "error: cargo not found: install a Rust toolchain (1.85 or newer), e.g. with rustup" >&2
  exit 1
fi
