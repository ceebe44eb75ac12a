#!/usr/bin/env bash
# Benchmark: panel API latency idle vs under 20,000 open public now-playing feeds (SSE) while
# now-playing changes, on this machine. Not a test.
#   scripts/bench-nowplaying.sh [--subscribers 20000] [--sources 10] [--samples 1000] [--worker-nice N]
set -euo pipefail
cd "$(dirname "$0")/.."
# ffmpeg makes the tracks; the build needs protoc.
scripts/install-deps.sh dev
# Every feed is a descriptor in the control plane (and one in a worker of the load generator).
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
echo "ulimit -n: $(ulimit -n)" >&2
cargo build --release --bin onda -p onda -p onda-tests --bin bench-nowplaying
target="$(cd "${CARGO_TARGET_DIR:-target}" && pwd)"
ONDA_BIN="$target/release/onda" exec "$target/release/bench-nowplaying" "$@"
