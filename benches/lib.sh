# Shared by the benchmark scripts (source it after `cd` to the repository):
# free loopback ports, private redis-servers and graphq processes, all
# stopped by PID when the script exits.

# A free loopback port. With `bus`, one whose cluster bus port (+10000) is
# free too.
free_port() {
  python3 - "${1:-}" <<'PY'
import socket, sys
while True:
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]
    if sys.argv[1] != "bus":
        break
    if p >= 55000:
        continue
    try:
        socket.socket().bind(("127.0.0.1", p + 10000)); break
    except OSError:
        pass
print(p)
PY
}

bench_dir=$(mktemp -d)
pids=()
# Stopped newest first: graphq processes go before the Redis they use, so
# they hand back their leases instead of logging broken pipes.
bench_cleanup() {
  local i
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
    kill "${pids[$i]}" 2>/dev/null || true
    wait "${pids[$i]}" 2>/dev/null || true
  done
  wait 2>/dev/null || true
  rm -rf "$bench_dir"
}
trap bench_cleanup EXIT

# start_redis PORT [redis-server args...]: no persistence unless the args
# say otherwise; returns once it answers PING.
start_redis() {
  local port=$1; shift
  mkdir -p "$bench_dir/$port"
  redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no --dir "$bench_dir/$port" \
    --daemonize no --logfile "$bench_dir/$port/redis.log" "$@" &
  pids+=($!)
  for _ in $(seq 50); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done
}

# wait_ready PORT: until the gateway or worker listener on PORT answers /readyz.
wait_ready() {
  for _ in $(seq 100); do curl -fs "http://127.0.0.1:$1/readyz" >/dev/null 2>&1 && break; sleep 0.1; done
}

# Settings for load generated on this one machine: every load client is a
# user of its own (a per-user rate far above the test rate), all of them
# connect from loopback (no per-address cap), and the fanout subscribers
# are all one user (no cap on that user's sockets).
lift_load_caps() {
  export GRAPHQ_GATEWAY__USER_RATE_LIMIT__MAX=100000
  export GRAPHQ_GATEWAY__MAX_CONNECTIONS_PER_IP=1000000
  export GRAPHQ_GATEWAY__MAX_SOCKETS_PER_USER=0
}

# start_gateway: a fresh release `graphq gateway` on $gport in place of the
# one before (its PID in $gw). A gateway that served and freed other
# connections would reuse that memory, and a memory figure would look
# smaller.
gw=
start_gateway() {
  if [ -n "$gw" ]; then kill "$gw"; wait "$gw" 2>/dev/null || true; fi
  ./target/release/graphq gateway --bind "127.0.0.1:$gport" & gw=$!; pids+=($gw)
  wait_ready "$gport"
}

# callgrind_ctl PORT PID ARGS...: callgrind_control ARGS for the redis-server
# PID running under callgrind on PORT. callgrind_control acts when the
# process next wakes, so Redis is kept busy with PINGs meanwhile.
callgrind_ctl() {
  local port=$1 vg=$2; shift 2
  ( for _ in $(seq 500); do redis-cli -p "$port" ping >/dev/null 2>&1; sleep 0.01; done ) &
  local pinger=$!
  timeout 60 callgrind_control "$@" "$vg" >/dev/null 2>&1 || true
  kill "$pinger" 2>/dev/null || true
  wait "$pinger" 2>/dev/null || true
}
