#!/usr/bin/env bash
# Benchmark: the signalling of 1,000 concurrent 1-to-1 calls on Onda's gateway (initiate,
# ring, accept, offer, answer, 10 ICE candidates each way, hang up), set-up and tear-down
# latency p50/p99 and CPU, on PostgreSQL, every record checked. Not a test.
#   scripts/bench-calls.sh
# Scale by environment: BENCH_CALLS=1000 BENCH_RAMP=500 (connections a second)
# BENCH_CALL_RATE=200 (new calls a second) BENCH_CANDIDATES=10 BENCH_HOLD_SECONDS=10; then the
# TURN relay benchmark (scripts/bench-turn.sh, BENCH_PAIRS and BENCH_SECONDS; BENCH_TURN=0: not).
# Needs PostgreSQL (ONDA_TEST_POSTGRES_URL, default postgres://postgres@127.0.0.1:5432/test).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh dev
# Two descriptors a call in the generator, two in the server.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
cargo build --release --bin onda -p onda -p onda-tests --bin bench-calls
target="$(cd "${CARGO_TARGET_DIR:-target}" && pwd)"
ONDA_BIN="$target/release/onda" "$target/release/bench-calls" "$@"
# The second half: TURN relaying of real WebRTC peers (scripts/bench-turn.sh; BENCH_TURN=0
# leaves it out).
if [ "${BENCH_TURN:-1}" != 0 ]; then
  scripts/bench-turn.sh
fi
