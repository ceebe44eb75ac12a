#!/usr/bin/env bash
# Where the server's CPU goes in a stream's chat room: runs bench-live-chat (release build) and
# records `onda control-plane` with perf (DWARF call graphs) for PROFILE_SECONDS (15) of the room
# phase, then prints the hottest call paths by inclusive share. Not a test.
#   scripts/profile-live-chat.sh            # 4 chat + 1 tip a second, 10,000 viewers
# Knobs as bench-live-chat's (BENCH_*); the data stays in PROFILE_DIR (target/profile-live-chat).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh bench
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
cargo build --release --bin onda -p onda -p onda-tests --bin bench-live-chat
target="$(cd "${CARGO_TARGET_DIR:-target}" && pwd)"
out="${PROFILE_DIR:-$target/profile-live-chat}"
mkdir -p "$out"
export ONDA_BIN="$target/release/onda" BENCH_NODE=0
export BENCH_CHAT_RATE="${BENCH_CHAT_RATE:-4}" BENCH_TIP_RATE="${BENCH_TIP_RATE:-1}"
export BENCH_SECONDS="${BENCH_SECONDS:-40}" BENCH_LEDGER_RATE="${BENCH_LEDGER_RATE:-20}"
export BENCH_LEDGER_SECONDS="${BENCH_LEDGER_SECONDS:-1}"
"$target/release/bench-live-chat" >"$out/bench.out" 2>&1 &
bench=$!
trap 'kill $bench 2>/dev/null || true' EXIT
# The room phase starts once every viewer joined; its warm-up is over a few seconds later.
until grep -q "joined the stream's room" "$out/bench.out" 2>/dev/null; do
  kill -0 "$bench" 2>/dev/null || { cat "$out/bench.out"; exit 1; }
  sleep 1
done
sleep 8
pid="$(pgrep -f "$ONDA_BIN control-plane" | head -1)"
perf record -F 299 --call-graph dwarf,16384 -p "$pid" -o "$out/perf.data" -- sleep "${PROFILE_SECONDS:-15}" \
  >"$out/perf.log" 2>&1
wait "$bench" || true
trap - EXIT
cat "$out/bench.out"
perf report -i "$out/perf.data" --no-children --sort dso --stdio -g none 2>/dev/null | grep -v '^#' | grep -v '^$' | head -5
perf report -i "$out/perf.data" --children --sort sym --stdio -g none 2>/dev/null | grep -v '^#' \
  | grep -v '^$' | grep -v 'inlined' | awk '$1+0 >= 5' | cut -c1-200 | head -60
echo "perf data: $out/perf.data"
