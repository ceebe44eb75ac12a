#!/usr/bin/env bash
# Benchmark: onda edge vs Icecast 2 (Debian icecast2) on this machine. Not a test.
#   scripts/bench-edge.sh [--cases 1000,storm4000,ramp10000] [--window 20]
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v icecast2 >/dev/null 2>&1 || ! command -v ffmpeg >/dev/null 2>&1; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "install icecast2 and ffmpeg first: sudo apt-get install -y icecast2 ffmpeg" >&2
    exit 1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends icecast2 ffmpeg >/tmp/onda-apt.log 2>&1 \
    || { apt-get update >>/tmp/onda-apt.log 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends icecast2 ffmpeg >>/tmp/onda-apt.log 2>&1; }
fi
# 10,000 listeners need ~10,000 descriptors in the server and as many in the load generator.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
echo "ulimit -n: $(ulimit -n)" >&2
cargo build --release --bin onda -p onda -p onda-tests --bin bench-edge
exec target/release/bench-edge "$@"
