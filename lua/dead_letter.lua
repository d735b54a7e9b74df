-- Moves an exhausted (or permanently failed) entry to the dead-letter stream, atomically.
-- KEYS[1]: stream the entry is in
-- KEYS[2]: attempts hash
-- KEYS[3]: dead-letter stream
-- KEYS[4]: counters hash
-- KEYS[5]: events stream
-- ARGV[1]: consumer group
-- ARGV[2]: entry id
-- ARGV[3]: job id
-- ARGV[4]: error message
-- ARGV[5]: attempts made
-- ARGV[6]: dead-letter stream max length
-- ARGV[7]: events stream max length
-- ARGV[8..]: original job fields as field, value pairs
-- Returns: the dead-letter entry id, or false when someone else settled the entry
if redis.call('XACK', KEYS[1], ARGV[1], ARGV[2]) == 0 then
  return false
end
redis.call('XDEL', KEYS[1], ARGV[2])
redis.call('HDEL', KEYS[2], ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local dead = redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[6], '*',
  'error', ARGV[4], 'attemptsMade', ARGV[5], 'failedAt', now, 'sourceEntry', ARGV[2],
  'sourceStream', KEYS[1], unpack(ARGV, 8))
redis.call('HINCRBY', KEYS[4], 'failed', 1)
redis.call('HINCRBY', KEYS[4], 'dead_lettered', 1)
redis.call('XADD', KEYS[5], 'MAXLEN', '~', ARGV[7], '*', 'event', 'dead_lettered', 'jobId', ARGV[3],
  'error', ARGV[4], 'attemptsMade', ARGV[5])
return dead
