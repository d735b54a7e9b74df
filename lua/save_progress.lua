-- Replaces a graph's progress record whole (CALCULATE_PROGRESS), so that a
-- status no node has any more does not linger from an earlier count.
-- KEYS[1]: the graph's progress hash
-- ARGV[1]: a field name, ARGV[2] its value; further pairs follow the same way
-- Returns: the number of fields written
redis.call('DEL', KEYS[1])
-- In slices: unpack of thousands of distinct statuses would overflow Lua's
-- stack. A slice holds whole pairs (its length is even).
local slice = 1000
for i = 1, #ARGV, slice do
  redis.call('HSET', KEYS[1], unpack(ARGV, i, math.min(i + slice - 1, #ARGV)))
end
return #ARGV / 2
