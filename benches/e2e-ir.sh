#!/usr/bin/env bash
# Redis instructions per applied command, end to end, for two graphq
# binaries: each run starts a private redis-server under valgrind's
# callgrind, a gateway and a worker of the binary, and this checkout's
# `graphq bench e2e` (200 clients, 20 graphs); it counts the instructions
# Redis executed while the load ran, over the commands applied. Under
# callgrind Redis is about fifty times slower, so a modest offered rate
# saturates it: the worker's reads then bring several commands of a graph
# at once, as at saturation without valgrind. Unlike CPU time on a shared
# machine, the count barely moves between runs of the same binary.
#
#   benches/e2e-ir.sh A_BINARY B_BINARY [PAIRS] [RATE] [SECONDS]
#     (defaults: 2 pairs, 600 commands/s, 8 s; A and B alternate)
#
# Prints one line per run: the binary's tag, commands applied, the rate
# achieved, EVALSHA and FCALL calls per command, and Ir per command. Needs
# valgrind (apt install valgrind). The kernel's share (socket reads and
# writes) is not in the count.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v valgrind >/dev/null || { echo "needs valgrind (apt install valgrind)" >&2; exit 1; }
a=$(realpath "$1"); b=$(realpath "$2"); pairs=${3:-2}; rate=${4:-600}; secs=${5:-8}
scripts/ensure-deps
cargo build --release --locked -q
source benches/lib.sh
load=./target/release/graphq

one_run() {
  local tag=$1 bin=$2 rport gport vg gw wk out
  rport=$(free_port); gport=$(free_port); out="$bench_dir/cg-$tag-$rport"
  mkdir -p "$out"
  valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$out/cg.%p" \
    redis-server --port "$rport" --bind 127.0.0.1 --save "" --appendonly no --dir "$out" \
    >"$out/valgrind.log" 2>&1 &
  vg=$!
  for _ in $(seq 100); do redis-cli -p "$rport" ping >/dev/null 2>&1 && break; sleep 0.2; done
  export GRAPHQ_REDIS_URL="redis://127.0.0.1:$rport" GRAPHQ_AUTH_SECRET="e2e-ir-secret-$(date +%s)-0123456789" RUST_LOG=error
  export GRAPHQ_GATEWAY__USER_RATE_LIMIT__MAX=100000
  "$bin" gateway --bind "127.0.0.1:$gport" & gw=$!
  "$bin" worker & wk=$!
  wait_ready "$gport"
  callgrind_ctl "$rport" "$vg" -i on
  callgrind_ctl "$rport" "$vg" -z
  redis-cli -p "$rport" config resetstat >/dev/null
  "$load" bench e2e --url "ws://127.0.0.1:$gport" --clients 200 --graphs 20 \
    --rate "$rate" --duration "$secs" >"$out/e2e.json" 2>/dev/null
  callgrind_ctl "$rport" "$vg" -d
  redis-cli -p "$rport" info commandstats >"$out/stats.txt"
  kill "$gw" "$wk" 2>/dev/null || true
  wait "$gw" "$wk" 2>/dev/null || true
  redis-cli -p "$rport" shutdown nosave >/dev/null 2>&1 || kill "$vg" 2>/dev/null || true
  wait "$vg" 2>/dev/null || true
  python3 - "$tag" "$out" <<'PY'
import glob, json, re, sys
tag, out = sys.argv[1], sys.argv[2]
run = json.load(open(out + "/e2e.json"))
ir = 0
for f in glob.glob(out + "/cg.*"):
    for line in open(f):
        if line.startswith(("summary:", "totals:")):
            ir = max(ir, int(line.split()[1]))
calls = dict(re.findall(r"cmdstat_(\w+):calls=(\d+)", open(out + "/stats.txt").read()))
n = max(1, run["applied"])
print(json.dumps({"run": tag, "applied": run["applied"], "lost": run["lost"],
                  "achieved_per_s": run["achieved_per_s"],
                  "evalsha_per_command": round(int(calls.get("evalsha", 0)) / n, 2),
                  "fcall_per_command": round(int(calls.get("fcall", 0)) / n, 2),
                  "ir_per_command": ir // n}))
PY
}

for _ in $(seq "$pairs"); do
  one_run A "$a"
  one_run B "$b"
done
