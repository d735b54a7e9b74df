-- Records a failed attempt of an entry that will be retried in place (ordered queues).
-- KEYS[1]: attempts hash (entry id -> failed or stalled attempts)
-- KEYS[2]: counters hash
-- KEYS[3]: events stream
-- ARGV[1]: entry id
-- ARGV[2]: job id
-- ARGV[3]: error message
-- ARGV[4]: delay before the next attempt, ms
-- ARGV[5]: events stream max length
-- Returns: attempts recorded for the entry so far
local n = redis.call('HINCRBY', KEYS[1], ARGV[1], 1)
redis.call('HINCRBY', KEYS[2], 'retried', 1)
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[5], '*', 'event', 'retrying', 'jobId', ARGV[2],
  'error', ARGV[3], 'delayMs', ARGV[4])
return n
