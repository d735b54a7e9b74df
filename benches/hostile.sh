#!/usr/bin/env bash
# Hostile subscribers (docs/reliability.md, "Hostile subscribers"): what one
# client's REQUEST_SYNC flood costs other users, and the gateway's memory
# under one socket's subscription and presence flood. A private
# redis-server, one gateway and one worker on loopback, stopped by PID.
# Prints one JSON line per measurement.
#
#   benches/hostile.sh [path/to/graphq]   (default: a release build)
# Env: FLOOD (5000), NODES (300), GRAPHS (10000).
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-}
if [ -z "$bin" ]; then
  cargo build --release --locked -q
  bin=./target/release/graphq
fi
source benches/lib.sh
rport=$(free_port); gport=$(free_port)
start_redis "$rport"
export GRAPHQ_REDIS_URL="redis://127.0.0.1:$rport" GRAPHQ_AUTH_SECRET="bench-secret-$(date +%s)-0123456789" RUST_LOG=warn
"$bin" gateway --bind "127.0.0.1:$gport" & gw=$!; pids+=($gw)
"$bin" worker & pids+=($!)
wait_ready "$gport"
GW="127.0.0.1:$gport" GW_PID=$gw \
  EDITOR=$("$bin" token --user alice --graph flood) \
  VIEWER=$("$bin" token --user vic --graph flood --role viewer) \
  OTHER=$("$bin" token --user bob --graph flood) \
  STAR=$("$bin" token --user mallory --graph '*' --role viewer) \
  node --experimental-websocket --no-warnings benches/hostile.mjs
