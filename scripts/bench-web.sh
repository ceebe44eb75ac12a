#!/usr/bin/env bash
# Benchmark: what a station's listeners in browsers cost, on this machine. Not a test.
#   1. 5,000 open now-playing feeds (SSE) of one station on one control-plane replica while the
#      AutoDJ changes track every 4 s: the replica's CPU and memory, every feed told of every
#      change, and the panel API's latency beside them (tests/src/bin/bench-nowplaying.rs).
#   2. 5,000 HLS players against 5,000 Icecast listeners of the same mount on one edge, in the
#      same run: CPU per listener and RSS (tests/src/bin/bench-hls-audio.rs).
#   scripts/bench-web.sh [--subscribers 5000] [--listeners 5000]
set -euo pipefail
cd "$(dirname "$0")/.."
subscribers=5000
listeners=5000
while [ $# -gt 0 ]; do
  case "$1" in
    --subscribers) subscribers=$2; shift 2 ;;
    --listeners) listeners=$2; shift 2 ;;
    *) echo "usage: $0 [--subscribers N] [--listeners N]" >&2; exit 2 ;;
  esac
done
echo "== now-playing feeds: $subscribers subscribers of one station ==" >&2
# Spread over 5 loopback addresses (the per-address cap is raised to match by the bench).
scripts/bench-nowplaying.sh --subscribers "$subscribers" --sources 5 --samples 400
echo "== audio fan-out: $listeners HLS players vs $listeners Icecast listeners ==" >&2
scripts/bench-hls-audio.sh --listeners "$listeners" --window 24 --ramp 10
