#!/usr/bin/env bash
# WebSocket against Server-Sent Events in interleaved pairs (BENCHMARKS.md,
# issue 19): on a machine whose load swings from minute to minute, one run
# of each says little, but the two runs of a pair see about the same
# machine. Each pair runs the e2e benchmark (2,000 commands/s, 200 clients,
# 20 graphs, 10 s) and the fanout benchmark (FANOUT_SUBSCRIBERS, 5000 by
# default) over both transports, each run against a fresh gateway (a
# private redis-server and one worker, release build, all started here and
# stopped by PID); which transport goes first alternates from pair to pair.
# Prints each run's JSON line, then per figure the SSE / WebSocket ratio of
# every pair and their min / median / max.
#
#   benches/pairs.sh [PAIRS] [e2e|fanout|all]   (defaults: 5 pairs, all)
set -euo pipefail
cd "$(dirname "$0")/.."
pairs=${1:-5}
what=${2:-all}
scripts/ensure-deps
cargo build --release --locked -q
source benches/lib.sh
rport=$(free_port); gport=$(free_port)
start_redis "$rport"
export GRAPHQ_REDIS_URL="redis://127.0.0.1:$rport" GRAPHQ_AUTH_SECRET="pairs-secret-$(date +%s)-0123456789" RUST_LOG=warn
lift_load_caps
./target/release/graphq worker & pids+=($!)
url="ws://127.0.0.1:$gport"
results="$bench_dir/runs.jsonl"
run_one() { # PAIR TRANSPORT
  local line
  if [ "$what" = e2e ] || [ "$what" = all ]; then
    start_gateway
    line=$(./target/release/graphq bench e2e --transport "$2" --url "$url" \
      --clients 200 --graphs 20 --rate 2000 --duration 10)
    echo "$line"; echo "{\"pair\":$1,${line#\{}" >>"$results"
  fi
  if [ "$what" = fanout ] || [ "$what" = all ]; then
    start_gateway
    line=$(./target/release/graphq bench fanout --transport "$2" --url "$url" \
      --subscribers "${FANOUT_SUBSCRIBERS:-5000}" --messages 20 --gateway-pid "$gw")
    echo "$line"; echo "{\"pair\":$1,${line#\{}" >>"$results"
  fi
}
for p in $(seq "$pairs"); do
  if [ $((p % 2)) -eq 1 ]; then run_one "$p" ws; run_one "$p" sse
  else run_one "$p" sse; run_one "$p" ws; fi
done
python3 - "$results" <<'PY'
import json, statistics, sys
runs = [json.loads(l) for l in open(sys.argv[1])]
figures = [
    ("e2e own COMMAND_APPLIED p99 (ms)", "e2e", lambda r: r["own_applied_ms"]["p99"]),
    ("e2e own COMMAND_APPLIED p50 (ms)", "e2e", lambda r: r["own_applied_ms"]["p50"]),
    ("e2e accepted p99 (ms)", "e2e", lambda r: r["accepted_ms"]["p99"]),
    ("fanout p99 (ms)", "fanout", lambda r: r["latency_ms"]["p99"]),
    ("fanout p50 (ms)", "fanout", lambda r: r["latency_ms"]["p50"]),
    ("gateway KiB per idle connection", "fanout", lambda r: r["gateway_kib_per_connection"]),
]
for name, bench, get in figures:
    by = {}
    for r in runs:
        if r["bench"] == bench:
            by.setdefault(r["pair"], {})[r["transport"]] = get(r)
    pairs = [v for _, v in sorted(by.items()) if "ws" in v and "sse" in v and v["ws"]]
    if not pairs:
        continue
    ratios = [v["sse"] / v["ws"] for v in pairs]
    ws = [round(v["ws"], 1) for v in pairs]
    sse = [round(v["sse"], 1) for v in pairs]
    print(json.dumps({"figure": name, "ws": ws, "sse": sse,
        "sse_over_ws": [round(x, 2) for x in ratios],
        "min": round(min(ratios), 2), "median": round(statistics.median(ratios), 2),
        "max": round(max(ratios), 2)}))
PY
