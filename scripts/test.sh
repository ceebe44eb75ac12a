#!/usr/bin/env bash
# `make test`: builds the web app and the binary the integration tests start, runs every test target of the
# workspace, and ends with one summary line over all of them.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build-web.sh
cargo build --bin onda
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
cargo test --workspace --all-targets --no-fail-fast 2>&1 | tee "$log" || status=$?
passed=$( (grep -E '^test result: ' "$log" || true) | grep -Eo '[0-9]+ passed' | awk '{s+=$1} END {print s+0}')
failed=$( (grep -E '^test result: ' "$log" || true) | grep -Eo '[0-9]+ failed' | awk '{s+=$1} END {print s+0}')
echo
echo "tests: ${passed} passed, ${failed} failed"
if [ "$status" -ne 0 ] || [ "$failed" -ne 0 ]; then
  exit 1
fi
if [ "$passed" -eq 0 ]; then
  echo "no test ran" >&2
  exit 1
fi
