#!/usr/bin/env bash
# The Redis CPU floor of a command's round trips (see benches/floor.py):
# RUNS runs of each commit mode, alternating, each against a fresh private
# redis-server, at RATE commands/s for 10 s. One JSON line per run.
#
#   benches/floor.sh [RUNS] [RATE]   (defaults: 3 runs, 2000 commands/s)
#
# READERS=1 (one reader for all partitions) and ACK_DELAY_MS=50 (shared
# acknowledgements) pass through to benches/floor.py.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-3}; rate=${2:-2000}
source benches/lib.sh
for _ in $(seq "$runs"); do
  for mode in bare multi script; do
    port=$(free_port)
    start_redis "$port"
    python3 benches/floor.py "$port" "$mode" "$rate" 10
    kill "${pids[-1]}"; wait "${pids[-1]}" 2>/dev/null || true
  done
done
