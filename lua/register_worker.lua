-- Registers (or keeps alive) a worker of a queue and lists the live ones, by Redis' clock.
-- KEYS[1]: workers set (ZSET: worker id -> registration expiry ms)
-- ARGV[1]: worker id
-- ARGV[2]: registration time to live in ms (0: deregister)
-- Returns: ids of the live workers, sorted
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if tonumber(ARGV[2]) > 0 then
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
else
  redis.call('ZREM', KEYS[1], ARGV[1])
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local live = redis.call('ZRANGE', KEYS[1], 0, -1)
table.sort(live)
return live
