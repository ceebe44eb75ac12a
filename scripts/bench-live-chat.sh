#!/usr/bin/env bash
# Benchmark: a live stream's chat on Onda's gateway (10,000 viewers in one room, 20 chat
# messages and 5 tips a second) and its ledger at 500 tips a second on PostgreSQL, totals
# checked exactly; then the same room on socketioxide alone (sio-peer) and on a Node.js
# socket.io 4.8 peer, in the same run. Not a test.
#   scripts/bench-live-chat.sh
# Scale by environment (the defaults are the issue's): BENCH_VIEWERS=10000 BENCH_RAMP=500
# BENCH_CHAT_RATE=20 BENCH_TIP_RATE=5 BENCH_SENDERS=60 BENCH_SECONDS=30 BENCH_WARMUP_SECONDS=3
# BENCH_LEDGER_RATE=500 BENCH_LEDGER_SECONDS=10 BENCH_ENGINE=1 BENCH_NODE=1. Needs PostgreSQL (ONDA_TEST_POSTGRES_URL,
# default postgres://postgres@127.0.0.1:5432/test).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh dev
# The Node.js peer's packages (socket.io 4.8, pg, jsonwebtoken), as bench-realtime.sh.
(cd tests/bench/realtime-node && npm ci --no-audit --no-fund --loglevel=error)
# Every viewer is a descriptor in the load generator, every connection one in the server.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
cargo build --release --bin onda -p onda -p onda-tests --bin bench-live-chat --bin sio-peer
target="$(cd "${CARGO_TARGET_DIR:-target}" && pwd)"
ONDA_BIN="$target/release/onda" exec "$target/release/bench-live-chat" "$@"
