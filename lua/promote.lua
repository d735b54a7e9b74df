-- Moves due delayed jobs of one partition into their priority streams.
-- KEYS[1]: delayed set (ZSET: job id -> due time ms)
-- KEYS[2]: delayed job bodies (HASH: job id -> JSON of the fields)
-- KEYS[3]: high priority stream
-- KEYS[4]: normal priority stream
-- KEYS[5]: low priority stream
-- ARGV[1]: most jobs to move in this call
-- Returns: {jobs moved, ms until the next delayed job is due or -1 when none is left}
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
local streams = {high = KEYS[3], normal = KEYS[4], low = KEYS[5]}
for _, id in ipairs(due) do
  local body = redis.call('HGET', KEYS[2], id)
  if body then
    local fields = cjson.decode(body)
    local flat = {}
    for k, v in pairs(fields) do
      flat[#flat + 1] = k
      flat[#flat + 1] = v
    end
    redis.call('XADD', streams[fields['priority']] or KEYS[4], '*', unpack(flat))
  end
  redis.call('ZREM', KEYS[1], id)
  redis.call('HDEL', KEYS[2], id)
end
local nxt = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if #nxt == 0 then
  return {#due, -1}
end
local wait = tonumber(nxt[2]) - now
if wait < 0 then wait = 0 end
return {#due, wait}
