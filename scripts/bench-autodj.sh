#!/usr/bin/env bash
# Benchmarks of the AutoDJ (not tests), release builds:
#   scripts/bench-autodj.sh [--stations 30] [--ls-stations 30] [--window 60]
#       onda edge's AutoDJ vs Liquidsoap + Icecast 2 (Debian liquidsoap, icecast2) on the same
#       files: CPU % and RSS per station, ratios, rendition encoding time
#   scripts/bench-autodj.sh drift [--seconds 3600]
#       audio delivered by one AutoDJ station vs wall time (target ±1 s per hour)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh bench
target=${CARGO_TARGET_DIR:-target}
if [ "${1:-}" = drift ]; then
  shift
  cargo build --release -q --bin onda -p onda -p onda-tests --bin bench-autodj-drift
  exec "$target/release/bench-autodj-drift" --onda "$target/release/onda" "$@"
fi
cargo build --release -q --bin onda -p onda -p onda-tests --bin bench-autodj
exec "$target/release/bench-autodj" --onda "$target/release/onda" "$@"
