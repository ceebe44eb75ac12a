#!/usr/bin/env bash
# Benchmark: live video (RTMP in, HLS out), onda edge vs nginx-rtmp (Debian libnginx-mod-rtmp)
# on this machine. Not a test.
#   scripts/bench-live.sh [--streams 10] [--window 30]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh bench
cargo build --release --bin onda -p onda -p onda-tests --bin bench-live
exec "${CARGO_TARGET_DIR:-target}/release/bench-live" "$@"
