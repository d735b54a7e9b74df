#!/usr/bin/env bash
# End-to-end benchmarks (`graphq bench e2e` and `graphq bench fanout`; BENCHMARKS.md)
# on loopback: a private redis-server, one gateway and one worker (release
# build), all started here and stopped by PID. Prints one JSON line per run.
#
#   benches/gateway.sh [e2e|fanout|all] [TRANSPORTS]
#
# TRANSPORTS: `ws` (the default), `sse`, or "ws sse" to run each benchmark
# over both, one after the other against the same gateway. E2E_RAMP="" skips
# the ramp; FANOUT_SUBSCRIBERS (10000) sets the fanout size.
set -euo pipefail
cd "$(dirname "$0")/.."
what=${1:-all}
transports=${2:-ws}
scripts/ensure-deps
cargo build --release --locked -q
source benches/lib.sh
rport=$(free_port); gport=$(free_port)
start_redis "$rport"
export GRAPHQ_REDIS_URL="redis://127.0.0.1:$rport" GRAPHQ_AUTH_SECRET="bench-secret-$(date +%s)-0123456789" RUST_LOG=warn
lift_load_caps
start_gateway
./target/release/graphq worker & pids+=($!)
url="ws://127.0.0.1:$gport"
runs=0
for transport in $transports; do
  if [ "$what" = e2e ] || [ "$what" = all ]; then
    [ "$runs" -gt 0 ] && start_gateway
    runs=$((runs + 1))
    ./target/release/graphq bench e2e --transport "$transport" --url "$url" --redis-url "$GRAPHQ_REDIS_URL" \
      --clients 200 --graphs 20 --rate 2000 --duration 10 ${E2E_RAMP---ramp 5000,7500,10000,20000}
  fi
  if [ "$what" = fanout ] || [ "$what" = all ]; then
    [ "$runs" -gt 0 ] && start_gateway
    runs=$((runs + 1))
    ./target/release/graphq bench fanout --transport "$transport" --url "$url" --subscribers "${FANOUT_SUBSCRIBERS:-10000}" \
      --messages 20 --gateway-pid "$gw"
  fi
done
