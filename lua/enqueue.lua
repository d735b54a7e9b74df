-- Adds one job to a queue partition (or to its delayed set), deduplicating by job id.
-- KEYS[1]: stream of the job's priority level
-- KEYS[2]: dedupe marker of the job id
-- KEYS[3]: delayed set (ZSET: job id -> due time ms)
-- KEYS[4]: delayed job bodies (HASH: job id -> JSON of the fields)
-- KEYS[5]: events stream
-- ARGV[1]: job id
-- ARGV[2]: dedupe window in ms (0: no dedupe)
-- ARGV[3]: delay in ms (0: runnable now)
-- ARGV[4]: "1" to emit an "added" event
-- ARGV[5]: events stream max length
-- ARGV[6..]: job fields as field, value pairs
-- Returns: {"added", entry id} | {"delayed", job id} | {"duplicate", what the first add returned}
local window = tonumber(ARGV[2])
if window > 0 then
  local prev = redis.call('GET', KEYS[2])
  if prev then
    return {'duplicate', prev}
  end
end

local delay = tonumber(ARGV[3])
local result
if delay > 0 then
  local fields = {}
  for i = 6, #ARGV, 2 do
    fields[ARGV[i]] = ARGV[i + 1]
  end
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  redis.call('ZADD', KEYS[3], now + delay, ARGV[1])
  redis.call('HSET', KEYS[4], ARGV[1], cjson.encode(fields))
  result = {'delayed', ARGV[1]}
else
  local entry = redis.call('XADD', KEYS[1], '*', unpack(ARGV, 6))
  result = {'added', entry}
end

if window > 0 then
  redis.call('SET', KEYS[2], result[2], 'PX', window)
end
if ARGV[4] == '1' then
  redis.call('XADD', KEYS[5], 'MAXLEN', '~', ARGV[5], '*', 'event', result[1], 'jobId', ARGV[1])
end
return result
