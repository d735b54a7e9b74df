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
--          settled; trimming whole stream nodes costs far less than XDEL per id)
-- ARGV[5..]: entry id, job id pairs
-- Returns: number of entries that were still pending and are now acknowledged
local ids = {}
for i = 5, #ARGV, 2 do
  ids[#ids + 1] = ARGV[i]
end
if #ids == 0 then return 0 end
local acked = redis.call('XACK', KEYS[1], ARGV[1], unpack(ids))
if ARGV[4] == '' then
  redis.call('XDEL', KEYS[1], unpack(ids))
else
  redis.call('XTRIM', KEYS[1], 'MINID', ARGV[4])
  redis.call('XDEL', KEYS[1], ARGV[4])
end
redis.call('HDEL', KEYS[2], unpack(ids))
redis.call('HINCRBY', KEYS[3], 'processed', acked)
if ARGV[2] == '1' then
  for i = 5, #ARGV, 2 do
    redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[3], '*', 'event', 'completed', 'jobId', ARGV[i + 1])
  end
end
return acked
