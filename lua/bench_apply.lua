-- The benchmark's stand-in for a graph mutation: one idempotent write per job.
-- KEYS[1]: graph meta hash (holds the version)
-- KEYS[2]: graph nodes hash
-- KEYS[3]: graph log stream (entry id <version>-0; `at` is Redis time in microseconds)
-- KEYS[4]: applied job ids hash (job id -> version), for exactly-once effect
-- ARGV[1]: job id
-- ARGV[2]: node id
-- ARGV[3]: node value
-- ARGV[4]: log max length
-- ARGV[5]: notification channel
-- ARGV[6]: "SPUBLISH" on Redis Cluster (the channel is sharded), else "PUBLISH"
-- Returns: the graph version after the job, or its version when already applied
local seen = redis.call('HGET', KEYS[4], ARGV[1])
if seen then
  return tonumber(seen)
end
local version = redis.call('HINCRBY', KEYS[1], 'version', 1)
local t = redis.call('TIME')
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[4], version .. '-0', 'job', ARGV[1], 'node', ARGV[2], 'value', ARGV[3],
  'at', t[1] .. string.format('%06d', tonumber(t[2])))
redis.call('HSET', KEYS[4], ARGV[1], version)
redis.call(ARGV[6] == 'SPUBLISH' and 'SPUBLISH' or 'PUBLISH', ARGV[5], version)
return version
