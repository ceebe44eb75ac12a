#!/usr/bin/env bash
# Benchmark: one onda edge's audio HLS fan-out against its Icecast fan-out of the same mount,
# in the same run. Not a test.
#   scripts/bench-hls-audio.sh [--listeners 5000] [--window 24] [--ramp 10]
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v ffmpeg >/dev/null 2>&1; then
  echo "install ffmpeg first: sudo apt-get install -y ffmpeg" >&2
  exit 1
fi
# 5,000 listeners need ~5,000 descriptors in the edge and as many in the load generator.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
echo "ulimit -n: $(ulimit -n)" >&2
cargo build --release --bin onda -p onda -p onda-tests --bin bench-hls-audio
exec "${CARGO_TARGET_DIR:-target}/release/bench-hls-audio" "$@"
