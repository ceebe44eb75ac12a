#!/usr/bin/env bash
# Cluster benchmarks: placement of 10,000 stations on 100 nodes (release build), and failover
# time from kill -9 of a station's node to audio through the redirector (real etcd, real agents).
#   scripts/bench-cluster.sh [failover-rounds]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh test
cargo run --release -q -p onda-tests --bin bench-placement
cargo build -q --bin onda
cargo run -q -p onda-tests --bin bench-failover -- "${1:-5}"
