-- Takes a lease when it is free, or extends it when the caller already holds it.
-- KEYS[1]: lease key
-- ARGV[1]: owner id
-- ARGV[2]: lease time to live in ms
-- Returns: 1 when the caller holds the lease now, 0 when someone else does
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then
  return 0
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
