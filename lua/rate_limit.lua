-- Takes up to N permits from a shared rate limiter (GCRA: max permits per period,
-- bursts up to max), by Redis' clock so every replica sees the same limiter.
-- KEYS[1]: limiter state (theoretical arrival time, ms)
-- ARGV[1]: max permits per period
-- ARGV[2]: period in ms
-- ARGV[3]: permits wanted
-- ARGV[4]: "all" to grant all of them or none (optional; otherwise as many as there is room for)
-- Returns: {permits granted, ms to wait before asking for the rest (0 when all granted);
--   with "all", until there is room for all of them}
local max = tonumber(ARGV[1])
local period = tonumber(ARGV[2])
local want = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local interval = period / max
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local room = math.floor((now + period - tat) / interval)
if room < 0 then room = 0 end
local all = ARGV[4] == 'all'
local granted = math.min(want, room)
if all and granted < want then granted = 0 end
if granted > 0 then
  tat = tat + granted * interval
  redis.call('SET', KEYS[1], string.format('%.3f', tat), 'PX', math.ceil(tat - now) + 1)
end
local wait = 0
if granted < want then
  local needed = 1
  if all then needed = want end
  wait = math.ceil(tat + needed * interval - period - now)
  if wait < 1 then wait = 1 end
end
return {granted, wait}
