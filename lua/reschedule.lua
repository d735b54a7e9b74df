-- Takes a failed entry out of its stream and schedules its next attempt as a delayed job
-- (competing-consumer queues, where a retry must not hold a worker).
-- KEYS[1]: stream
-- KEYS[2]: attempts hash
-- KEYS[3]: delayed set
-- KEYS[4]: delayed job bodies
-- KEYS[5]: counters hash
-- KEYS[6]: events stream
-- ARGV[1]: consumer group
-- ARGV[2]: entry id
-- ARGV[3]: job id
-- ARGV[4]: delay in ms
-- ARGV[5]: error message
-- ARGV[6]: events stream max length
-- ARGV[7..]: job fields as field, value pairs (attempts already counted)
-- Returns: 1 when the entry was still pending and is rescheduled, 0 when someone else settled it
if redis.call('XACK', KEYS[1], ARGV[1], ARGV[2]) == 0 then
  return 0
end
redis.call('XDEL', KEYS[1], ARGV[2])
redis.call('HDEL', KEYS[2], ARGV[2])
local fields = {}
for i = 7, #ARGV, 2 do
  fields[ARGV[i]] = ARGV[i + 1]
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[3], now + tonumber(ARGV[4]), ARGV[3])
redis.call('HSET', KEYS[4], ARGV[3], cjson.encode(fields))
redis.call('HINCRBY', KEYS[5], 'retried', 1)
redis.call('XADD', KEYS[6], 'MAXLEN', '~', ARGV[6], '*', 'event', 'retrying', 'jobId', ARGV[3],
  'error', ARGV[5], 'delayMs', ARGV[4])
return 1
