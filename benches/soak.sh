#!/usr/bin/env bash
# Soak (docs/reliability.md, Soak): steady load for a long time, watching memory.
#
#   benches/soak.sh [SECONDS] [RATE] [GRAPHS]      defaults: 600 1000 50
#
# A private redis-server (AOF everysec), one gateway and one worker (release
# build), all started here and stopped by PID. `graphq bench e2e` sends RATE
# commands a second over WebSocket across GRAPHS graphs for SECONDS. Every 10 s
# a sample goes to $SOAK_OUT/samples.csv (default: a temporary directory):
# gateway and worker RSS, Redis used_memory and key count, queue backlog.
#
# Passes (exit 0) when nothing was lost or duplicated, gateway and worker RSS
# grew less than 10 % between the end of the warm-up (the first fifth of the
# run, at least 60 s) and the end, and Redis memory stopped growing: its
# last-fifth average is within 10 % of the middle fifth's. Redis holds a
# bounded amount by design: each graph's log is capped (graph.log_retention)
# per-operation records expire (graph.op_ttl_s) and so do the queue's dedupe
# keys (queues.commands.dedupe_window_ms). The soak shortens all three
# (SOAK_LOG_RETENTION, SOAK_OP_TTL_S, SOAK_DEDUPE_WINDOW_MS) so that the plateau
# is reached inside the run; docs/reliability.md gives the figures and the
# steady-state formula.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-600}
rate=${2:-1000}
graphs=${3:-50}
out=${SOAK_OUT:-$(mktemp -d)}
mkdir -p "$out"
scripts/ensure-deps
cargo build --release --locked -q
source benches/lib.sh
rport=$(free_port); gport=$(free_port)
start_redis "$rport" --appendonly yes --appendfsync everysec
export GRAPHQ_REDIS_URL="redis://127.0.0.1:$rport" GRAPHQ_AUTH_SECRET="soak-secret-$(date +%s)-0123456789" RUST_LOG=warn
export GRAPHQ_GATEWAY__USER_RATE_LIMIT__MAX=100000
# Every load client connects from loopback: lift the per-address connection cap.
export GRAPHQ_GATEWAY__MAX_CONNECTIONS_PER_IP=1000000
export GRAPHQ_GRAPH__LOG_RETENTION=${SOAK_LOG_RETENTION:-1000}
export GRAPHQ_GRAPH__OP_TTL_S=${SOAK_OP_TTL_S:-60}
export GRAPHQ_QUEUES__COMMANDS__DEDUPE_WINDOW_MS=${SOAK_DEDUPE_WINDOW_MS:-60000}
./target/release/graphq gateway --bind "127.0.0.1:$gport" & gw=$!; pids+=($gw)
./target/release/graphq worker & wk=$!; pids+=($wk)
wait_ready "$gport"

clients=$(( graphs * 2 ))
./target/release/graphq bench e2e --url "ws://127.0.0.1:$gport" --clients "$clients" --graphs "$graphs" \
  --rate "$rate" --duration "$seconds" > "$out/bench.json" &
bench=$!; pids+=($bench)

rss() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
echo "t_s,gateway_rss_kib,worker_rss_kib,redis_used_memory,redis_keys,queue_backlog" > "$out/samples.csv"
start=$(date +%s)
while kill -0 "$bench" 2>/dev/null; do
  t=$(( $(date +%s) - start ))
  mem=$(redis-cli -p "$rport" info memory | awk -F: '/^used_memory:/ {print $2}' | tr -d '\r')
  keys=$(redis-cli -p "$rport" dbsize | tr -d '\r')
  backlog=$(./target/release/graphq queues --json 2>/dev/null \
    | python3 -c 'import json,sys; print(sum(p["lag"] + p["pending"] for q in json.load(sys.stdin) for p in q["partitions"]))' 2>/dev/null || echo "?")
  echo "$t,$(rss "$gw"),$(rss "$wk"),$mem,$keys,$backlog" >> "$out/samples.csv"
  sleep 10
done
wait "$bench" || true

python3 - "$out" "$seconds" <<'EOF'
import csv, json, sys
out, seconds = sys.argv[1], int(sys.argv[2])
rows = [r for r in csv.DictReader(open(f"{out}/samples.csv"))]
bench = json.loads(open(f"{out}/bench.json").read().strip().splitlines()[-1])
warm = max(60, seconds // 5)
after = [r for r in rows if int(r["t_s"]) >= warm]
if len(after) < 3:
    sys.exit("soak: too few samples after the warm-up")
def growth(col):
    a, b = int(after[0][col]), int(after[-1][col])
    return a, b, (b - a) * 100.0 / a
n = len(after)
mid = after[n * 2 // 5: n * 3 // 5] or after[:1]
end = after[n * 4 // 5:]
avg = lambda rs: sum(int(r["redis_used_memory"]) for r in rs) / len(rs)
gw, wk = growth("gateway_rss_kib"), growth("worker_rss_kib")
redis_mid, redis_end = avg(mid), avg(end)
report = {
    "seconds": seconds, "rate": bench.get("rate"), "achieved_per_s": bench.get("achieved_per_s"),
    "sent": bench.get("sent"), "applied": bench.get("applied"), "lost": bench.get("lost"),
    "duplicated": bench.get("duplicated"),
    "own_applied_p99_ms": bench.get("own_applied_ms", {}).get("p99"),
    "others_applied_p99_ms": bench.get("others_applied_ms", {}).get("p99"),
    "gateway_rss_kib": {"after_warmup": gw[0], "end": gw[1], "growth_pct": round(gw[2], 1)},
    "worker_rss_kib": {"after_warmup": wk[0], "end": wk[1], "growth_pct": round(wk[2], 1)},
    "redis_used_memory": {"middle_fifth_avg": int(redis_mid), "last_fifth_avg": int(redis_end),
                          "max": max(int(r["redis_used_memory"]) for r in rows),
                          "growth_pct": round((redis_end - redis_mid) * 100.0 / redis_mid, 1)},
    "samples": f"{out}/samples.csv",
}
print(json.dumps(report))
failed = []
if report["lost"] != 0 or report["duplicated"] != 0:
    failed.append("commands lost or duplicated")
if gw[2] >= 10 or wk[2] >= 10:
    failed.append("RSS grew 10 % or more after the warm-up")
if report["redis_used_memory"]["growth_pct"] >= 10:
    failed.append("Redis memory still growing")
if failed:
    sys.exit("soak FAILED: " + "; ".join(failed))
print("soak passed")
EOF
