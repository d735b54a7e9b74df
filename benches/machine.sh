#!/usr/bin/env bash
# How fast this machine runs a Redis round trip, so that figures from
# different days (or machines) can be compared: a private redis-server
# (started here, stopped by PID) answers PING from `redis-benchmark`, first
# one client at a time (the round trip: loopback, two syscalls each side,
# scheduling), then 50 clients (what one Redis core serves). Three runs each;
# prints one JSON line per run.
#
#   benches/machine.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/lib.sh
port=$(free_port)
start_redis "$port"
for run in 1 2 3; do
  one=$(redis-benchmark -p "$port" -t ping_mbulk -n 20000 -c 1 --csv | tail -1)
  many=$(redis-benchmark -p "$port" -t ping_mbulk -n 200000 -c 50 --csv | tail -1)
  python3 - "$run" "$one" "$many" <<'PY'
import csv, json, sys
def row(line):
    r = next(csv.reader([line]))
    return float(r[1]), float(r[2])  # requests/s, average latency ms
run, (one_rps, one_ms), (many_rps, _) = sys.argv[1], row(sys.argv[2]), row(sys.argv[3])
print(json.dumps({"run": int(run), "ping_one_client_per_s": round(one_rps),
    "ping_round_trip_us": round(one_ms * 1000, 1), "ping_50_clients_per_s": round(many_rps)}))
PY
done
