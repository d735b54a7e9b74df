#!/usr/bin/env bash
# Redis instructions per hot-path call, free of the machine's noise: a private
# redis-server runs under valgrind's callgrind (instrumentation on only while
# measuring), and benches/redis_ir.py sends it graphq's admission call
# (lua/enqueue.lua with its claim and rate-limit guards) and apply call (the
# lua/apply_command.lua library: a position update, a label update, a node
# creation) and the worker's commit of a node move (lua/commit_node.lua), N of
# each (default 400; commit:6mov sends the moves six to a call, as a batch of
# one graph's commands goes, and counts per move). Prints instructions (Ir) per call, one
# line per workload, for each git revision given (default: the working tree),
# so that two revisions compare in one run:
#
#   benches/redis-ir.sh                  # the working tree's scripts
#   benches/redis-ir.sh f5f68a6 HEAD     # two revisions, same run
#
# Needs valgrind (apt install valgrind). ~4,500 Ir are about a microsecond of
# Redis CPU on the machine of BENCHMARKS.md; instruction counts do not include
# the kernel's share (socket reads and writes).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v valgrind >/dev/null || { echo "needs valgrind (apt install valgrind)" >&2; exit 1; }
source benches/lib.sh
n=${N:-400}
port=$(free_port)
out="$bench_dir/cg"
mkdir -p "$out"
valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$out/cg.%p" \
  redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no --dir "$bench_dir" \
  >"$bench_dir/valgrind.log" 2>&1 &
vg=$!
pids+=("$vg")
for _ in $(seq 100); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.2; done

control() { callgrind_ctl "$port" "$vg" "$@"; }

# measure LABEL ARGS...: Ir per call of `redis_ir.py PORT ARGS... N`.
measure() {
  local label=$1; shift
  python3 benches/redis_ir.py "$port" "$@" 20
  rm -f "$out"/cg.*
  control -i on
  control -z
  python3 benches/redis_ir.py "$port" "$@" "$n"
  control -d
  control -i off
  local ir
  ir=$(grep -hE '^(summary|totals):' "$out"/cg.* | awk '{print $2}' | sort -n | tail -1)
  printf '%-10s %-10s %8d\n' "$rev" "$label" $((ir / n))
}

source_of() { if [ "$1" = "worktree" ]; then cat "$2"; else git show "$1:$2"; fi; }

revs=("$@")
[ ${#revs[@]} -gt 0 ] || revs=(worktree)
printf '%-10s %-10s %8s\n' revision call Ir/call
for rev in "${revs[@]}"; do
  { printf '#!lua name=graphq_apply_ir\nlocal FUNCTION_NAME = %s\n' "'graphq_apply_ir'"
    source_of "$rev" lua/apply_command.lua; } >"$bench_dir/apply.lua"
  loaded=$(redis-cli -p "$port" -x function load replace <"$bench_dir/apply.lua")
  [ "$loaded" = graphq_apply_ir ] || { echo "FUNCTION LOAD failed: $loaded" >&2; exit 1; }
  sha=$(redis-cli -p "$port" script load "$(source_of "$rev" lua/enqueue.lua)")
  measure admission enq "$sha"
  python3 benches/redis_ir.py "$port" prep
  measure apply:upd upd
  measure apply:lbl lbl
  measure apply:crt crt
  if [ "$rev" = worktree ] || git cat-file -e "$rev:lua/commit_node.lua" 2>/dev/null; then
    commit=$(source_of "$rev" lua/commit_node.lua)
    sha=$(redis-cli -p "$port" script load "$commit")
    # Since 602275a one call commits a graph's updates of a batch; before,
    # one call per update in another layout.
    if grep -q 'then per update' <<<"$commit"; then
      measure commit:mov mov "$sha" 1
      measure commit:6mov mov "$sha" 6
    else
      measure commit:mov mov "$sha" old
    fi
  fi
done
