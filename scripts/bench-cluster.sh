#!/usr/bin/env bash
# Cluster benchmarks: placement of 10,000 stations on 100 nodes (release build), and failover
# time from kill -9 of a station's node to audio through the redirector (real etcd or the
# in-process coordinator, real agents, and onda dev), with the production defaults.
#   scripts/bench-cluster.sh [failover-rounds]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh test
cargo run --release -q -p onda-tests --bin bench-placement
cargo build -q --bin onda
# Failover with the production defaults: etcd (several replicas), the in-process coordinator
# (one control plane), and `onda dev --nodes 3` as a developer runs it.
cargo run -q -p onda-tests --bin bench-failover -- "${1:-5}"
COORDINATOR=memory cargo run -q -p onda-tests --bin bench-failover -- "${1:-5}"
cargo run -q -p onda-tests --bin bench-failover -- --dev "${1:-5}"
