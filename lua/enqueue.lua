-- Adds one job to a queue partition (or to its delayed set), deduplicating by job id.
-- Optionally behind two guards, checked first so that nothing changes when one
-- refuses: a claim of the job for an owner, and one permit of a rate limiter
-- (GCRA, the same arithmetic as rate_limit.lua). With both, admitting a command
-- is this one call (single Redis: the guard keys are not in the stream's slot).
-- KEYS[1]: stream of the job's priority level
-- KEYS[2]: dedupe marker of the job id; KEYS[1] with a claim (the claim dedupes)
-- KEYS[3]: delayed set (ZSET: job id -> due time ms)
-- KEYS[4]: delayed job bodies (HASH: job id -> JSON of the fields)
-- KEYS[5]: events stream
-- KEYS[6]: claim record (HASH: graphId = owner, status, entry = the stream entry); KEYS[1] when unused
-- KEYS[7]: rate limiter state (theoretical arrival time, ms); KEYS[1] when unused
-- ARGV[1]: job id
-- ARGV[2]: dedupe window in ms (0: no dedupe; 0 with a claim, which dedupes for its TTL)
-- ARGV[3]: delay in ms (0: runnable now)
-- ARGV[4]: "1" to emit an "added" event
-- ARGV[5]: events stream max length
-- ARGV[6]: claim owner ("" for no claim)
-- ARGV[7]: claim record TTL, s
-- ARGV[8]: limiter max permits per period ("" for no limiter)
-- ARGV[9]: limiter period in ms
-- ARGV[10..]: job fields as field, value pairs
-- Returns: {"added", entry id} | {"delayed", job id} | {"duplicate", what the first add returned}
--   | {"taken", the owner that claimed the job first} | {"limited", ms to wait}
-- With a claim, the claim is the dedupe record: the same owner again is a
-- duplicate (for the claim's life), another owner is refused.
local claimed = ARGV[6] ~= ''
if claimed then
  local rec = redis.call('HMGET', KEYS[6], 'graphId', 'entry')
  if rec[1] then
    if rec[1] ~= ARGV[6] then return {'taken', rec[1]} end
    return {'duplicate', rec[2] or ''}
  end
end

if ARGV[8] ~= '' then
  local max, period = tonumber(ARGV[8]), tonumber(ARGV[9])
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
  local interval = period / max
  local tat = tonumber(redis.call('GET', KEYS[7]) or now)
  if tat < now then tat = now end
  if math.floor((now + period - tat) / interval) < 1 then
    local wait = math.ceil(tat + interval - period - now)
    if wait < 1 then wait = 1 end
    return {'limited', tostring(wait)}
  end
  tat = tat + interval
  redis.call('SET', KEYS[7], string.format('%.3f', tat), 'PX', math.ceil(tat - now) + 1)
end

local window = tonumber(ARGV[2])
if claimed then
  window = 0
elseif window > 0 then
  local prev = redis.call('GET', KEYS[2])
  if prev then
    return {'duplicate', prev}
  end
end

local delay = tonumber(ARGV[3])
local result
if delay > 0 then
  local fields = {}
  for i = 10, #ARGV, 2 do
    fields[ARGV[i]] = ARGV[i + 1]
  end
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  redis.call('ZADD', KEYS[3], now + delay, ARGV[1])
  redis.call('HSET', KEYS[4], ARGV[1], cjson.encode(fields))
  result = {'delayed', ARGV[1]}
else
  local entry = redis.call('XADD', KEYS[1], '*', unpack(ARGV, 10))
  result = {'added', entry}
end

if claimed then
  redis.call('HSET', KEYS[6], 'status', 'pending', 'graphId', ARGV[6], 'entry', result[2])
  redis.call('EXPIRE', KEYS[6], ARGV[7])
elseif window > 0 then
  redis.call('SET', KEYS[2], result[2], 'PX', window)
end
if ARGV[4] == '1' then
  redis.call('XADD', KEYS[5], 'MAXLEN', '~', ARGV[5], '*', 'event', result[1], 'jobId', ARGV[1])
end
return result
