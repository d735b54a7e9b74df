#!/usr/bin/env bash
# One Redis vs a Redis Cluster of 3 masters (each with a replica), on this
# machine: the same `graphq bench` runs against both. Every redis-server,
# gateway and worker is started here on free loopback ports and stopped by
# PID. Prints one JSON line per run, prefixed with the target.
#
#   benches/cluster.sh [RUNS]        (default 1 run per benchmark and target)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-1}
scripts/ensure-deps
cargo build --release --locked -q
source benches/lib.sh

single=$(free_port); start_redis "$single"
nodes=()
for _ in 1 2 3 4 5 6; do
  p=$(free_port bus); start_redis "$p" --cluster-enabled yes --cluster-config-file nodes.conf --cluster-node-timeout 2000
  nodes+=("127.0.0.1:$p")
done
redis-cli --cluster create "${nodes[@]}" --cluster-replicas 1 --cluster-yes >/dev/null
for _ in $(seq 100); do
  redis-cli -p "${nodes[0]##*:}" cluster info | grep -q cluster_state:ok && break; sleep 0.1
done
sleep 1
seeds=$(printf 'redis://%s,' "${nodes[@]}"); seeds=${seeds%,}

export GRAPHQ_AUTH_SECRET="bench-secret-$(date +%s)-0123456789" RUST_LOG=warn,redis=error
export GRAPHQ_GATEWAY__USER_RATE_LIMIT__MAX=100000
# Every load client connects from loopback: lift the per-address connection cap.
export GRAPHQ_GATEWAY__MAX_CONNECTIONS_PER_IP=1000000
run_target() { # name, then the graphq flags that select the Redis
  local name=$1; shift
  for _ in $(seq "$runs"); do
    echo "$name $(./target/release/graphq "$@" bench queue --jobs 100000 --handler apply)"
    echo "$name $(./target/release/graphq "$@" bench graph --graphs 100 --commands 20000)"
    local gport; gport=$(free_port)
    ./target/release/graphq "$@" gateway --bind "127.0.0.1:$gport" & local gw=$!
    ./target/release/graphq "$@" worker & local wk=$!
    pids+=($gw $wk)
    wait_ready "$gport"
    echo "$name $(./target/release/graphq "$@" bench e2e --url "ws://127.0.0.1:$gport" --clients 100 --graphs 20 --rate 2000 --duration 10)"
    kill "$gw" "$wk"; wait "$gw" "$wk" 2>/dev/null || true
  done
}
run_target single --redis "redis://127.0.0.1:$single"
run_target cluster --redis-cluster "$seeds"
