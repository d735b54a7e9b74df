-- Commits the UPDATE_NODEs of one graph that the worker decided itself
-- (src/graph/store/node_updates.rs), in order, in one call: for each, the
-- outcome apply_command.lua would reach when no field the command writes
-- was changed concurrently or has an open conflict, computed by the worker
-- from the graph it remembers, each decided on the graph the one before it
-- leaves. Writes only while the graph is still exactly the one the worker
-- decided on (same epoch, version and checksum, and the node's per-field
-- versions, where a conflict revert marks an open conflict without a new
-- version) and the operation has no outcome yet; at the first update where
-- that fails it stops, and the worker sends that one and the rest to the
-- apply function.
-- KEYS[1]: graph meta hash
-- KEYS[2]: nodes hash
-- KEYS[3]: per-field versions hash
-- KEYS[4]: change log stream
-- then per update, three keys: its operation's outcome, the sender's undo
--   list, the sender's redo list
-- ARGV[1]: epoch, ARGV[2]: version, ARGV[3]: checksum the first update was decided on (as stored)
-- ARGV[4]: change log length to keep, ARGV[5]: outcome TTL, s
-- ARGV[6]: "SPUBLISH" on Redis Cluster, else "PUBLISH"; ARGV[7]: the graph's channel
-- then per update, 15 values: new version, new checksum, node id, the node
--   as it is to be stored, its per-field versions field (n:ID), their JSON,
--   their JSON as the worker decided on them, operation id, user id, command
--   type, client timestamp, the change (change log, undo list), the outcome
--   record, the note for subscribers, the sender's outcomes channel
-- Returns: how many updates were committed (the first ones; 0: nothing written)
local meta = redis.call('HMGET', KEYS[1], 'epoch', 'version', 'checksum')
if meta[1] ~= ARGV[1] or meta[2] ~= ARGV[2] or meta[3] ~= ARGV[3] then return 0 end
local publish = ARGV[6] == 'SPUBLISH' and 'SPUBLISH' or 'PUBLISH'

local done = 0
for i = 0, (#ARGV - 7) / 15 - 1 do
  local version, checksum, id, node, field, fv, decided_fv, op, user, kind, timestamp, change, record,
    note, outcomes = unpack(ARGV, 8 + 15 * i, 22 + 15 * i)
  local k = 4 + 3 * i
  local op_key, undo = KEYS[k + 1], KEYS[k + 2]
  if redis.call('HGET', KEYS[3], field) ~= decided_fv then break end
  if redis.call('EXISTS', op_key) == 1 then break end
  redis.call('HSET', KEYS[2], id, node)
  redis.call('HSET', KEYS[3], field, fv)
  redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[4], version .. '-0', 'operationId', op,
    'userId', user, 'type', kind, 'timestamp', timestamp, 'change', change)
  if redis.call('LPUSH', undo, change) > 100 then redis.call('LTRIM', undo, 0, 99) end
  redis.call('DEL', KEYS[k + 3])
  redis.call('SET', op_key, record, 'EX', ARGV[5])
  redis.call(publish, ARGV[7], note)
  redis.call('PUBLISH', outcomes, note)
  done = i + 1
end
-- The graph's version and checksum once, as the last committed update left them.
if done > 0 then
  redis.call('HSET', KEYS[1], 'version', ARGV[8 + 15 * (done - 1)], 'checksum', ARGV[9 + 15 * (done - 1)])
end
return done
