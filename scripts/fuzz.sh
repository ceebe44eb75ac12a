#!/usr/bin/env bash
# Coverage-guided fuzzing of the edge's RTMP ingest (handshake, chunks, AMF0 commands, media)
# and its FLV tag parsing, with cargo-fuzz (libFuzzer) on the nightly toolchain:
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]     (default: 300 s each, every target)
# Needs `rustup toolchain install nightly` and `cargo install cargo-fuzz`. Findings are kept in
# fuzz/artifacts/TARGET/; the corpus grows in fuzz/corpus/TARGET/. Exits non-zero on a finding.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
secs="${1:-300}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(rtmp flv)
fi
cargo +nightly fuzz build
status=0
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t"
    echo "== $t: ${secs} s"
    if ! cargo +nightly fuzz run "$t" "corpus/$t" -- -max_total_time="$secs" -print_final_stats=1; then
        echo "== $t: FINDING (see fuzz/artifacts/$t/)"
        status=1
    fi
done
exit $status
