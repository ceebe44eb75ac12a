#!/usr/bin/env bash
# Benchmark: Onda's realtime gateway (Socket.io) vs a Node.js socket.io 4.8 server doing the same
# work, and between them socketioxide alone (sio-peer: that work on the engine under the gateway),
# on this machine, in one run, with the same load generator. Not a test.
#   scripts/bench-realtime.sh
# Scale by environment (the defaults are the issue's): BENCH_CLIENTS=10000 BENCH_RAMP=500
# BENCH_IDLE_SECONDS=15 BENCH_PAIRS=2000 BENCH_SECONDS=30 BENCH_WARMUP_SECONDS=3
# BENCH_ROOM=5000 BENCH_ROOM_RATE=10. Needs PostgreSQL (ONDA_TEST_POSTGRES_URL, default
# postgres://postgres@127.0.0.1:5432/test) and Node.js with npm.
set -euo pipefail
cd "$(dirname "$0")/.."
# node and npm (the peer server), protoc (the build).
scripts/install-deps.sh dev
# The Node peer's packages, exactly as locked.
(cd tests/bench/realtime-node && npm ci --no-audit --no-fund --loglevel=error)
# Every client is a descriptor in the load generator, every connection one in the server.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
echo "ulimit -n: $(ulimit -n)" >&2
cargo build --release --bin onda -p onda -p onda-tests --bin bench-realtime --bin sio-peer
target="$(cd "${CARGO_TARGET_DIR:-target}" && pwd)"
ONDA_BIN="$target/release/onda" exec "$target/release/bench-realtime" "$@"
