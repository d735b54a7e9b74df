-- Takes over entries that another consumer left pending for at least a given idle time,
-- counting the takeover as an attempt (a job that keeps killing its worker must end).
-- KEYS[1]: stream
-- KEYS[2]: attempts hash
-- KEYS[3]: counters hash
-- KEYS[4]: events stream
-- ARGV[1]: consumer group
-- ARGV[2]: consumer taking the entries over
-- ARGV[3]: minimum idle time in ms
-- ARGV[4]: most entries to take
-- ARGV[5]: events stream max length
-- Returns: {next cursor, {{entry id, {field, value, ...}, attempts recorded}, ...}}
local cursor = '0-0'
local out = {}
local want = tonumber(ARGV[4])
repeat
  local r = redis.call('XAUTOCLAIM', KEYS[1], ARGV[1], ARGV[2], ARGV[3], cursor, 'COUNT', want - #out)
  cursor = r[1]
  for _, e in ipairs(r[2]) do
    local n = redis.call('HINCRBY', KEYS[2], e[1], 1)
    out[#out + 1] = {e[1], e[2], n}
    local job_id = ''
    for i = 1, #e[2], 2 do
      if e[2][i] == 'id' then job_id = e[2][i + 1] end
    end
    redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[5], '*', 'event', 'stalled', 'jobId', job_id)
  end
until cursor == '0-0' or #out >= want
if #out > 0 then
  redis.call('HINCRBY', KEYS[3], 'stalled', #out)
end
return {cursor, out}
