-- Commits an UPDATE_NODE the worker decided itself (src/graph/store/node_updates.rs):
-- the outcome apply_command.lua would reach when no field the command writes
-- was changed concurrently or has an open conflict, computed by the worker
-- from the graph it remembers. Writes only when the graph is still exactly
-- that one (same epoch, version and checksum, and the node's per-field
-- versions, where a conflict revert marks an open conflict without a new
-- version) and the operation has no outcome yet; otherwise writes nothing
-- and returns false, and the worker sends the command to the apply function.
-- KEYS[1]: graph meta hash
-- KEYS[2]: nodes hash
-- KEYS[3]: per-field versions hash
-- KEYS[4]: change log stream
-- KEYS[5]: this operation's outcome
-- KEYS[6]: the sender's undo list
-- KEYS[7]: the sender's redo list
-- ARGV[1]: epoch, ARGV[2]: version, ARGV[3]: checksum the worker decided on (as stored)
-- ARGV[4]: new version, ARGV[5]: new checksum
-- ARGV[6]: node id, ARGV[7]: the node as it is to be stored
-- ARGV[8]: its per-field versions field (n:ID), ARGV[9]: their JSON
-- ARGV[10]: operation id, ARGV[11]: user id, ARGV[12]: command type, ARGV[13]: client timestamp
-- ARGV[14]: the change (change log, undo list)
-- ARGV[15]: change log length to keep, ARGV[16]: outcome TTL, s
-- ARGV[17]: the outcome record
-- ARGV[18]: "SPUBLISH" on Redis Cluster, else "PUBLISH"; ARGV[19]: the graph's channel
-- ARGV[20]: the note for subscribers; ARGV[21]: the sender's outcomes channel
-- ARGV[22]: the node's per-field versions JSON the worker decided on
-- Returns: 1 when committed, false when nothing was written
local meta = redis.call('HMGET', KEYS[1], 'epoch', 'version', 'checksum')
if meta[1] ~= ARGV[1] or meta[2] ~= ARGV[2] or meta[3] ~= ARGV[3] then return false end
if redis.call('HGET', KEYS[3], ARGV[8]) ~= ARGV[22] then return false end
if redis.call('EXISTS', KEYS[5]) == 1 then return false end

redis.call('HSET', KEYS[2], ARGV[6], ARGV[7])
redis.call('HSET', KEYS[3], ARGV[8], ARGV[9])
redis.call('HSET', KEYS[1], 'version', ARGV[4], 'checksum', ARGV[5])
redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[15], ARGV[4] .. '-0', 'operationId', ARGV[10],
  'userId', ARGV[11], 'type', ARGV[12], 'timestamp', ARGV[13], 'change', ARGV[14])
if redis.call('LPUSH', KEYS[6], ARGV[14]) > 100 then redis.call('LTRIM', KEYS[6], 0, 99) end
redis.call('DEL', KEYS[7])
redis.call('SET', KEYS[5], ARGV[17], 'EX', ARGV[16])
redis.call(ARGV[18] == 'SPUBLISH' and 'SPUBLISH' or 'PUBLISH', ARGV[19], ARGV[20])
redis.call('PUBLISH', ARGV[21], ARGV[20])
return 1
