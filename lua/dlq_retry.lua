-- Replays one dead-letter entry: its original job goes back into its priority stream
-- with a fresh attempt count, and leaves the dead-letter stream, atomically.
-- KEYS[1]: dead-letter stream
-- KEYS[2]: high priority stream
-- KEYS[3]: normal priority stream
-- KEYS[4]: low priority stream
-- KEYS[5]: events stream
-- ARGV[1]: dead-letter entry id
-- ARGV[2]: events stream max length
-- Returns: the new stream entry id, or false when no such dead-letter entry exists
local found = redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1])
if #found == 0 then
  return false
end
local meta = {error = true, attemptsMade = true, failedAt = true, sourceEntry = true, sourceStream = true}
local raw = found[1][2]
local flat = {}
local priority = 'normal'
local job_id = ''
for i = 1, #raw, 2 do
  local k, v = raw[i], raw[i + 1]
  if not meta[k] then
    if k == 'attempts' then v = '0' end
    if k == 'priority' then priority = v end
    if k == 'id' then job_id = v end
    flat[#flat + 1] = k
    flat[#flat + 1] = v
  end
end
local streams = {high = KEYS[2], normal = KEYS[3], low = KEYS[4]}
local entry = redis.call('XADD', streams[priority] or KEYS[3], '*', unpack(flat))
redis.call('XDEL', KEYS[1], ARGV[1])
redis.call('XADD', KEYS[5], 'MAXLEN', '~', ARGV[2], '*', 'event', 'replayed', 'jobId', job_id)
return entry
