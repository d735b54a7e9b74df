#!/usr/bin/env python3
"""Sends graphq's two hot-path Redis calls, built as graphq builds them, to a
Redis on PORT (used by benches/redis-ir.sh):

  redis_ir.py PORT prep                 recreate graph "ir" with node n19 (3 data keys)
  redis_ir.py PORT upd|lbl|crt N        N apply FCALLs: a position update of n19,
                                        a label update of n19, a node creation
  redis_ir.py PORT enq SHA N            N admissions (enqueue.lua with the claim
                                        and rate-limit guards)
  redis_ir.py PORT mov SHA [K] N        N commits of position updates of n19 as the
                                        worker decides them (lua/commit_node.lua), K
                                        updates per call (default 1; "old" for the
                                        one-update layout of revisions before 602275a)

Every call has a fresh operation id; the calls go in pipelined chunks of 50
and each answer is checked (applied / added)."""
import hashlib
import json
import socket
import sys
import time

port, what = int(sys.argv[1]), sys.argv[2]
GRAPH = "ir"
USER = "u1"
SETTINGS = json.dumps(
    {"conflictRetention": 1000, "logRetention": 10000, "maxEdges": 200000, "maxNodes": 100000,
     "opTtl": 3600, "strategies": {"edge.data": "MERGE", "edge.type": "LAST_WRITE_WINS",
                                   "node.data": "MERGE", "node.position": "LAST_WRITE_WINS",
                                   "node.type": "LAST_WRITE_WINS", "viewport": "LAST_WRITE_WINS"}},
    separators=(",", ":"), sort_keys=True)
RUN = str(time.time_ns())

sock = socket.create_connection(("127.0.0.1", port))
reader = sock.makefile("rb")


def encode(args):
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        a = str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


def reply():
    line = reader.readline()
    kind = line[:1]
    if kind == b"-":
        sys.exit("redis error: " + line.decode().strip())
    if kind in b"+:":
        return line[1:-2]
    if kind == b"$":
        n = int(line[1:-2])
        return None if n < 0 else reader.read(n + 2)[:-2]
    if kind == b"*":
        return [reply() for _ in range(int(line[1:-2]))]
    sys.exit("unexpected reply %r" % line)


def send_all(calls, check):
    for start in range(0, len(calls), 50):
        chunk = calls[start:start + 50]
        sock.sendall(b"".join(encode(c) for c in chunk))
        for _ in chunk:
            r = reply()
            if not check(r):
                sys.exit("unexpected answer: %r" % (r if not isinstance(r, bytes) else r[:300]))


def key(suffix):
    return "graphq:{g:%s}:%s" % (GRAPH, suffix)


def apply_call(op_id, op, canonical):
    return ["FCALL", "graphq_apply_ir", 10, key("meta"), key("nodes"), key("edges"), key("adj"),
            key("fv"), key("log"), key("op:" + op_id), key("undo:" + USER), key("redo:" + USER),
            key("conflicts"), op_id, USER, int(time.time() * 1000), "epoch0", SETTINGS,
            json.dumps(op, separators=(",", ":")), "", 0, op["t"], key("events"), canonical, GRAPH,
            "graphq:{u:%s}:events" % USER, "PUBLISH", "graphq:{u:%s}:outcomes" % USER]


def apply_op(kind, i):
    if kind == "upd":
        return {"t": "UPDATE_NODE", "id": "n19", "data": [], "unset": [],
                "position": '{"x":%d,"y":3}' % i, "hasData": False}
    if kind == "lbl":
        return {"t": "UPDATE_NODE", "id": "n19", "data": [['"label"', '"name %d"' % i]], "unset": [],
                "hasData": True}
    if kind == "crt":
        return {"t": "CREATE_NODE", "id": "c%sx%d" % (RUN[-6:], i), "type": "null",
                "position": '{"x":1,"y":2}', "data": [['"label"', '"new"']]}
    sys.exit("unknown workload " + kind)


def admission(sha, i):
    op_id = "e-%s-%d" % (RUN, i)
    data = ('{"graphId":"g0","userId":"bench-0","command":{"operationId":"%s","payload":{"id":"n0",'
            '"patch":{"position":{"x":2,"y":0}}},"type":"UPDATE_NODE"}}' % op_id)
    part = "graphq:{q:commands:3}"
    # With a claim, the stream stands in for the dedupe marker and the window is 0.
    return ["EVALSHA", sha, 7, part + ":stream:normal", part + ":stream:normal", part + ":delayed",
            part + ":delayed:jobs", part + ":events", "graphq:{op:%s}" % op_id,
            "graphq:{rl:gateway:bench-0}", op_id, 0, 0, 0, 10000, "g0", 3600, 1000000, 1000,
            "id", op_id, "name", "UPDATE_NODE", "data", data, "priority", "normal", "attempts", 0,
            "ts", int(time.time() * 1000), "key", "g0", "rk", "bench-0"]


def h(x):
    return int(hashlib.sha1(x.encode()).hexdigest()[:12], 16)


def commits(sha, n, per_call):
    """What the worker sends for n moves of n19 (src/graph/store/node_updates.rs),
    starting from the graph as stored now: per_call updates per call of the
    one-graph layout, or "old": one call per update in the layout before it."""
    sock.sendall(encode(["HMGET", key("meta"), "epoch", "version", "checksum"]) +
                 encode(["HGET", key("nodes"), "n19"]) + encode(["HGET", key("fv"), "n:n19"]))
    epoch, version, checksum = [x.decode() for x in reply()]
    old, fv_text = reply().decode(), reply().decode()
    fv = json.loads(fv_text)
    version, checksum = int(version), int(checksum)
    head, rest = old.split(',"position":', 1)
    tail = rest[rest.index(',"data":'):rest.rindex(',"version":')]
    created = old[old.index(',"createdBy":'):old.index(',"updatedBy":')]
    calls, keys, args = [], [], []
    now = int(time.time() * 1000)
    k = 1 if per_call == "old" else int(per_call)
    for i in range(n):
        op_id = "mov-%s-%d" % (RUN, i)
        new = "%s,\"position\":{\"x\":%d,\"y\":3}%s,\"version\":%d%s,\"updatedBy\":\"%s\",\"updatedAt\":%d}" % (
            head, i, tail, version + 1, created, USER, now)
        fv["position"] = [version + 1, USER]
        new_fv = json.dumps(fv, separators=(",", ":"))
        new_checksum = (checksum - h("n" + old) + h("n" + new)) % (1 << 48)
        change = ('{"nodes":[%s],"edges":[],"removedNodes":[],"removedEdges":[],"undo":{"nodes":{"n19":%s},"edges":{}}}'
                  % (new, old))
        outcome = '{"status":"applied","version":%d,"change":%s,"conflicts":[]}' % (version + 1, change)
        command = ('{"operationId":"%s","payload":{"id":"n19","patch":{"position":{"x":%d,"y":3}}},"type":"UPDATE_NODE"}'
                   % (op_id, i))
        note = ('{"graphId":"%s","epoch":"%s","operationId":"%s","userId":"%s","type":"UPDATE_NODE","timestamp":0,'
                '"appliedAt":%d,"command":%s,"outcome":%s}' % (GRAPH, epoch, op_id, USER, now, command, outcome))
        record = '{"status":"applied","version":%d}' % (version + 1)
        outcomes = "graphq:{u:%s}:outcomes" % USER
        if per_call == "old":
            calls.append(["EVALSHA", sha, 7, key("meta"), key("nodes"), key("fv"), key("log"), key("op:" + op_id),
                          key("undo:" + USER), key("redo:" + USER), epoch, version, checksum, version + 1,
                          new_checksum, "n19", new, "n:n19", new_fv, op_id, USER,
                          "UPDATE_NODE", 0, change, 10000, 3600, record,
                          "PUBLISH", key("events"), note, outcomes, fv_text])
        else:
            if not keys:
                keys = [key("meta"), key("nodes"), key("fv"), key("log")]
                args = [epoch, version, checksum, 10000, 3600, "PUBLISH", key("events")]
            keys += [key("op:" + op_id), key("undo:" + USER), key("redo:" + USER)]
            args += [version + 1, new_checksum, "n19", new, "n:n19", new_fv, fv_text, op_id, USER,
                     "UPDATE_NODE", 0, change, record, note, outcomes]
            if len(keys) == 4 + 3 * k:
                calls.append(["EVALSHA", sha, len(keys)] + keys + args)
                keys, args = [], []
        old, version, checksum, fv_text = new, version + 1, new_checksum, new_fv
    if keys:
        calls.append(["EVALSHA", sha, len(keys)] + keys + args)
    return calls


applied = lambda r: isinstance(r, bytes) and b'"status":"applied"' in r
if what == "prep":
    send_all([["DEL", key(k)] for k in
              ["meta", "nodes", "edges", "adj", "fv", "log", "undo:u1", "redo:u1", "conflicts"]],
             lambda r: True)
    node = {"t": "CREATE_NODE", "id": "n19", "type": "null", "position": '{"x":0,"y":0}',
            "data": [['"label"', '"a node"'], ['"color"', '"#ff0000"'], ['"w"', "120"]]}
    send_all([apply_call("prep-" + RUN, node, "{}")], applied)
elif what == "mov":
    sha, per_call, n = (sys.argv[3], sys.argv[4], int(sys.argv[5])) if len(sys.argv) > 5 \
        else (sys.argv[3], "1", int(sys.argv[4]))
    calls = commits(sha, n, per_call)
    # Each call commits all its updates: (keys - 4) / 3 of them ("old": 1).
    written = [b"1" if per_call == "old" else str((c[2] - 4) // 3).encode() for c in calls]
    send_all(calls, lambda r: r == written.pop(0))
elif what == "enq":
    sha, n = sys.argv[3], int(sys.argv[4])
    send_all([admission(sha, i) for i in range(n)], lambda r: isinstance(r, list) and r[0] == b"added")
else:
    n = int(sys.argv[3])
    calls = []
    for i in range(n):
        op_id = "%s-%s-%d" % (what, RUN, i)
        op = apply_op(what, i)
        calls.append(apply_call(op_id, op, '{"operationId":"%s","type":"%s","payload":{}}' % (op_id, op["t"])))
    send_all(calls, applied)
