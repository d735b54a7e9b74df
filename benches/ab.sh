#!/usr/bin/env bash
# Before/after of the command path: the same load generator (this checkout's
# release `graphq bench e2e --redis-url`) against the gateway and worker of
# two graphq binaries, alternating A, B, A, B… so that both see the same
# machine. Each run gets a fresh private redis-server, started and stopped
# here by PID. Prints one JSON line per run, tagged "A" or "B".
#
#   benches/ab.sh A_BINARY B_BINARY [RUNS] [RATE]   (defaults: 3 runs, 2000 commands/s)
#
# RAMP=4000,6000,8000,10000 also tries those rates in each run (10 s each)
# and reports the highest one sustained with nothing lost
# (`highest_sustained_rate`): the saturation comparison.
set -euo pipefail
cd "$(dirname "$0")/.."
a=$(realpath "$1"); b=$(realpath "$2"); runs=${3:-3}; rate=${4:-2000}
scripts/ensure-deps
cargo build --release --locked -q
source benches/lib.sh
load=./target/release/graphq

one_run() {
  local tag=$1 bin=$2 rport gport gw wk
  rport=$(free_port); gport=$(free_port)
  start_redis "$rport"
  local redis_pid=${pids[-1]}
  export GRAPHQ_REDIS_URL="redis://127.0.0.1:$rport" GRAPHQ_AUTH_SECRET="ab-secret-$(date +%s)-0123456789" RUST_LOG=warn
  export GRAPHQ_GATEWAY__USER_RATE_LIMIT__MAX=100000
  "$bin" gateway --bind "127.0.0.1:$gport" & gw=$!
  "$bin" worker & wk=$!
  wait_ready "$gport"
  printf '{"run":"%s",' "$tag"
  "$load" bench e2e --url "ws://127.0.0.1:$gport" --redis-url "$GRAPHQ_REDIS_URL" \
    --gateway-pid "$gw" --worker-pid "$wk" --clients 200 --graphs 20 --rate "$rate" --duration 10 ${RAMP:+--ramp "$RAMP"} | sed 's/^{//'
  kill "$gw" "$wk" 2>/dev/null || true
  wait "$gw" "$wk" 2>/dev/null || true
  kill "$redis_pid" 2>/dev/null || true
  wait "$redis_pid" 2>/dev/null || true
}

for _ in $(seq "$runs"); do
  one_run A "$a"
  one_run B "$b"
done
