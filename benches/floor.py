#!/usr/bin/env python3
"""The least Redis work a command's round trips can cost: graphq's command
path with the deciding taken out, so that a per-command Redis CPU target can
be judged against what Redis spends on the trips alone (used by
benches/floor.sh).

  floor.py PORT MODE RATE SECONDS

Same shape as `graphq bench e2e` (20 graphs, 16 partitions, RATE commands/s,
one round trip per admission), with these Redis calls per command:

  admission   SET claim NX EX + XADD to the graph's partition stream (pipelined)
  read        XREADGROUP over the partition (blocking, COUNT 100), with the
              previous read's XACK + XDEL pipelined in front of it (with
              ACK_DELAY_MS, those of the entries settled since at least
              that long, as graphq's `ack_delay_ms`)
  commit      MODE "bare": no writes at all, only the PUBLISH of the note
              (the queue and the delivery alone)
              MODE "multi": MULTI, HSET node, HSET meta version, XADD change
              log, SET outcome EX, PUBLISH note, EXEC
              MODE "script": one EVALSHA of a short script that checks the
              graph's version and the operation id, then does the same
              writes (what a worker that decides in its own memory would send)
  delivery    one subscriber connection on the 20 graph channels

Prints one JSON line: commands sent, notes received, and Redis CPU
(used_cpu_user + used_cpu_sys of INFO cpu) per command, with the commands
INFO commandstats counted per command."""
import json
import os
import socket
import sys
import threading
import time

PORT, MODE, RATE, SECONDS = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
GRAPHS, PARTITIONS = 20, 16
READERS = int(os.environ.get("READERS", PARTITIONS))
# ACK_DELAY_MS=50: acknowledgements wait for a read that starts 50 ms after
# the oldest settled entry, as graphq's `ack_delay_ms` (0: every read acks).
ACK_DELAY = float(os.environ.get("ACK_DELAY_MS", 0)) / 1000

COMMIT = """
local meta = redis.call('HMGET', KEYS[1], 'version')
if redis.call('EXISTS', KEYS[4]) == 1 then return 0 end
local v = (tonumber(meta[1]) or 0) + 1
if ARGV[1] ~= '' and tonumber(ARGV[1]) ~= v - 1 then return -1 end
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
redis.call('HSET', KEYS[1], 'version', v)
redis.call('XADD', KEYS[3], 'MAXLEN', '~', 10000, v .. '-0', 'change', ARGV[4])
redis.call('SET', KEYS[4], '{"status":"applied","version":' .. v .. '}', 'EX', 3600)
redis.call('PUBLISH', ARGV[5], ARGV[6])
return v
"""


class Conn:
    def __init__(self):
        self.sock = socket.create_connection(("127.0.0.1", PORT))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.reader = self.sock.makefile("rb")

    def send(self, *calls):
        out = []
        for args in calls:
            out.append(b"*%d\r\n" % len(args))
            for a in args:
                a = a if isinstance(a, bytes) else str(a).encode()
                out.append(b"$%d\r\n%s\r\n" % (len(a), a))
        self.sock.sendall(b"".join(out))

    def reply(self):
        line = self.reader.readline()
        kind = line[:1]
        if kind == b"-":
            raise RuntimeError(line.decode().strip())
        if kind in b"+:":
            return line[1:-2]
        if kind == b"$":
            n = int(line[1:-2])
            return None if n < 0 else self.reader.read(n + 2)[:-2]
        if kind == b"*":
            n = int(line[1:-2])
            return None if n < 0 else [self.reply() for _ in range(n)]
        raise RuntimeError("unexpected reply %r" % line)

    def call(self, *args):
        self.send(args)
        return self.reply()


def stream(p):
    return "{q:commands}:%d" % p


def info(conn, section):
    text = conn.call("INFO", section).decode()
    return dict(l.split(":", 1) for l in text.splitlines() if ":" in l and not l.startswith("#"))


stop = threading.Event()
received = [0]


def subscriber(ready):
    c = Conn()
    c.send(["SUBSCRIBE"] + ["graph:%d" % g for g in range(GRAPHS)])
    for _ in range(GRAPHS):
        c.reply()
    ready.set()
    while True:
        c.reply()
        received[0] += 1


def worker(parts, sha):
    c = Conn()
    names = [stream(p) for p in parts]
    unacked, since = {}, None
    while not stop.is_set():
        # Settled entries' acknowledgements travel with a later read.
        calls, block = [], 200
        age = time.monotonic() - since if since is not None else 0
        if unacked and age >= ACK_DELAY:
            for s, ids in unacked.items():
                calls += [["XACK", s, "g"] + ids, ["XDEL", s] + ids]
            unacked, since = {}, None
        elif unacked:
            block = max(1, int((ACK_DELAY - age) * 1000))
        calls.append(["XREADGROUP", "GROUP", "g", "w", "COUNT", 100, "BLOCK", block, "STREAMS"] + names +
                     [">"] * len(names))
        c.send(*calls)
        for _ in calls[1:]:
            c.reply()
        for s, entries in c.reply() or []:
            for entry_id, fields in entries:
                commit(c, sha, dict(zip(fields[0::2], fields[1::2])))
                unacked.setdefault(s, []).append(entry_id)
                if since is None:
                    since = time.monotonic()


def commit(c, sha, f):
    g, op, body = f[b"g"].decode(), f[b"op"].decode(), f[b"cmd"]
    node = b'{"id":"n","type":null,"position":' + body + b',"data":{},"version":0}'
    note = b'{"graphId":"' + g.encode() + b'","operationId":"' + op.encode() + b'","command":' + body + b'}'
    if MODE == "bare":
        c.call("PUBLISH", "graph:%s" % g, note)
    elif MODE == "multi":
        c.send(["MULTI"], ["HSET", "g:%s:nodes" % g, "n", node], ["HINCRBY", "g:%s:meta" % g, "version", 1],
               ["XADD", "g:%s:log" % g, "MAXLEN", "~", 10000, "*", "change", node],
               ["SET", "g:%s:op:%s" % (g, op), '{"status":"applied"}', "EX", 3600],
               ["PUBLISH", "graph:%s" % g, note], ["EXEC"])
        for _ in range(7):
            c.reply()
    else:
        c.call("EVALSHA", sha, 4, "g:%s:meta" % g, "g:%s:nodes" % g, "g:%s:log" % g,
               "g:%s:op:%s" % (g, op), "", "n", node, node, "graph:%s" % g, note)


def main():
    admin = Conn()
    sha = admin.call("SCRIPT", "LOAD", COMMIT).decode()
    for p in range(PARTITIONS):
        admin.call("XGROUP", "CREATE", stream(p), "g", "$", "MKSTREAM")
    ready = threading.Event()
    threads = [threading.Thread(target=subscriber, args=(ready,), daemon=True)]
    # READERS=1: one reader for all partitions (one XREADGROUP over every
    # stream); otherwise one reader per partition, as graphq's worker has.
    groups = [list(range(PARTITIONS))] if READERS == 1 else [[p] for p in range(PARTITIONS)]
    threads += [threading.Thread(target=worker, args=(g, sha), daemon=True) for g in groups]
    for t in threads:
        t.start()
    ready.wait()
    admin.call("CONFIG", "RESETSTAT")
    before = info(admin, "cpu")
    gate = Conn()
    sent, t0 = 0, time.monotonic()
    total = int(RATE * SECONDS)
    while sent < total:
        due = t0 + sent / RATE
        now = time.monotonic()
        if due > now:
            time.sleep(due - now)
        g = sent % GRAPHS
        op = "op-%d" % sent
        gate.send(["SET", "claim:%s" % op, g, "NX", "EX", 3600],
                  ["XADD", stream(g % PARTITIONS), "*", "g", g, "op", op, "cmd", '{"x":%d,"y":1}' % sent])
        gate.reply(); gate.reply()
        sent += 1
    deadline = time.monotonic() + 10
    while received[0] < sent and time.monotonic() < deadline:
        time.sleep(0.05)
    after = info(admin, "cpu")
    stats = info(admin, "commandstats")
    stop.set()
    cpu = sum(float(after[k]) - float(before[k]) for k in ("used_cpu_user", "used_cpu_sys"))
    calls = {}
    for k, v in stats.items():
        name = k[len("cmdstat_"):]
        if name in ("info", "config", "script", "xgroup"):
            continue
        calls[name] = round(int(v.split(",")[0].split("=")[1]) / max(sent, 1), 2)
    print(json.dumps({"mode": MODE, "readers": min(READERS, PARTITIONS), "ack_delay_ms": ACK_DELAY * 1000, "rate": RATE, "sent": sent, "notes": received[0],
                      "redis_cpu_us_per_command": round(cpu * 1e6 / max(sent, 1), 1),
                      "redis_commands_per_command": round(sum(calls.values()), 2),
                      "redis_commands_by_name": calls}))


main()
