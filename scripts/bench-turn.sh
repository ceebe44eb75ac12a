#!/usr/bin/env bash
# Benchmark: TURN relaying of real WebRTC peers (headless Debian chromium, relay-only) through
# a node's coturn as the agent runs it, with the bytes Onda meters from coturn's log against
# what the peers counted. Not a test.
#   scripts/bench-turn.sh
# Scale by environment: BENCH_PAIRS=1,4,8,16,24,32 (pairs of connections at once, one count
# after the other) BENCH_SECONDS=20 (each count's measured window).
set -euo pipefail
cd "$(dirname "$0")/.."
# coturn, chromium and playwright-core (tests/browser) come with the test dependencies.
scripts/install-deps.sh test
cargo build --release --bin onda -p onda -p onda-tests --bin bench-turn
target="$(cd "${CARGO_TARGET_DIR:-target}" && pwd)"
ONDA_BIN="$target/release/onda" exec "$target/release/bench-turn" "$@"
