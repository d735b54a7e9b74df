-- Acknowledges and removes processed entries of one stream, counting them.
-- KEYS[1]: stream
-- KEYS[2]: attempts hash (entry id -> failed or stalled attempts)
-- KEYS[3]: counters hash
-- KEYS[4]: events stream
-- ARGV[1]: consumer group
-- ARGV[2]: "1" to emit a "completed" event per job
-- ARGV[3]: events stream max length
-- ARGV[4..]: entry id, job id pairs
-- Returns: number of entries that were still pending and are now acknowledged
local ids = {}
for i = 4, #ARGV, 2 do
  ids[#ids + 1] = ARGV[i]
end
if #ids == 0 then return 0 end
local acked = redis.call('XACK', KEYS[1], ARGV[1], unpack(ids))
redis.call('XDEL', KEYS[1], unpack(ids))
redis.call('HDEL', KEYS[2], unpack(ids))
redis.call('HINCRBY', KEYS[3], 'processed', acked)
if ARGV[2] == '1' then
  for i = 4, #ARGV, 2 do
    redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[3], '*', 'event', 'completed', 'jobId', ARGV[i + 1])
  end
end
return acked
