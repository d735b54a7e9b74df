#!/usr/bin/env bash
# Queue engine benchmark matrix (`graphq bench queue`; BENCHMARKS.md), against a
# private redis-server on a free loopback port that this script starts and
# stops. Prints one JSON line per run; BENCHMARKS.md records the medians.
#
#   benches/queue.sh [RUNS]        (default 3 runs per configuration)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-3}
scripts/ensure-deps
cargo build --release --locked -q
source benches/lib.sh
port=$(free_port)
start_redis "$port"
bench() { ./target/release/graphq --redis "redis://127.0.0.1:$port" bench queue "$@"; }
for _ in $(seq "$runs"); do
  bench --jobs 200000 --concurrency 16 --handler noop
  bench --jobs 200000 --concurrency 16 --handler apply
  bench --jobs 200000 --concurrency 16 --handler noop --events failures
  bench --jobs 100000 --concurrency 64 --handler noop --kind priority --partitions 1
done
