-- Acknowledges and removes processed entries of one stream, counting them.
-- KEYS[1]: stream
-- KEYS[2]: attempts hash (entry id -> failed or stalled attempts)
-- KEYS[3]: counters hash
-- KEYS[4]: events stream
-- ARGV[1]: consumer group
-- ARGV[2]: "1" to emit a "completed" event per job
-- ARGV[3]: events stream max length
-- ARGV[4]: "" to delete exactly these entries; or the highest of them, to trim
--          everything up to it (ordered partitions, where all older entries are
--          settled; trimming whole stream nodes costs far less than XDEL per id).
--          Never past an entry still pending, though: a failover or a former owner
--          can leave an older entry pending, and it must stay to be taken over.
-- ARGV[5..]: entry id, job id pairs
-- Returns: number of entries that were still pending and are now acknowledged

-- Whether stream id a is lower than b (ids compare as numbers, not as text).
local function lower(a, b)
  local ams, aseq = string.match(a, '^(%d+)-(%d+)$')
  local bms, bseq = string.match(b, '^(%d+)-(%d+)$')
  if tonumber(ams) ~= tonumber(bms) then
    return tonumber(ams) < tonumber(bms)
  end
  return tonumber(aseq) < tonumber(bseq)
end

local ids = {}
for i = 5, #ARGV, 2 do
  ids[#ids + 1] = ARGV[i]
end
if #ids == 0 then return 0 end
local acked = redis.call('XACK', KEYS[1], ARGV[1], unpack(ids))
if ARGV[4] == '' then
  redis.call('XDEL', KEYS[1], unpack(ids))
else
  -- No group (it vanished): nothing is pending.
  local ok, first = pcall(redis.call, 'XPENDING', KEYS[1], ARGV[1], '-', '+', 1)
  if ok and #first > 0 and lower(first[1][1], ARGV[4]) then
    -- Everything older than the oldest pending entry is settled; of the rest,
    -- exactly these entries are.
    redis.call('XTRIM', KEYS[1], 'MINID', first[1][1])
    redis.call('XDEL', KEYS[1], unpack(ids))
  else
    redis.call('XTRIM', KEYS[1], 'MINID', ARGV[4])
    redis.call('XDEL', KEYS[1], ARGV[4])
  end
end
redis.call('HDEL', KEYS[2], unpack(ids))
redis.call('HINCRBY', KEYS[3], 'processed', acked)
if ARGV[2] == '1' then
  for i = 5, #ARGV, 2 do
    redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[3], '*', 'event', 'completed', 'jobId', ARGV[i + 1])
  end
end
return acked
