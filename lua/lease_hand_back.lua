-- Gives an ordered partition's lease back, and with it the entries its owner read
-- but never started: they become undelivered again, so the next owner reads them
-- in order as new work (no takeover, no attempt counted) and nothing is left pending.
-- Only while the caller still holds the lease: once another worker does, it may be
-- reading the stream already, and what the caller left pending is that worker's to
-- take over.
-- KEYS[1]: lease key
-- KEYS[2]: the partition's stream
-- ARGV[1]: owner id (also its consumer name in the group)
-- ARGV[2]: consumer group
-- ARGV[3]: hand back the caller's pending entries after this entry id ("-": all of
--          them; "": none, only give the lease back)
-- ARGV[4]: most entries to hand back
-- Returns: {1 when released else 0, number of entries handed back}
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return {0, 0}
end
local handed = 0
if ARGV[3] ~= '' and redis.call('EXISTS', KEYS[2]) == 1 then
  local start = ARGV[3]
  if start ~= '-' then
    start = '(' .. start
  end
  local ok, pending = pcall(redis.call, 'XPENDING', KEYS[2], ARGV[2], start, '+', ARGV[4], ARGV[1])
  if ok and #pending > 0 then
    local ids = {}
    for i, p in ipairs(pending) do
      ids[i] = p[1]
    end
    -- The group's last delivered id goes back to just before the first of them
    -- (or to the start when nothing older is left in the stream): a `>` read then
    -- delivers them again, in order. Nothing between that id and them is
    -- undelivered (one owner reads a partition, in order), so nothing is skipped.
    local before = redis.call('XREVRANGE', KEYS[2], '(' .. ids[1], '-', 'COUNT', 1)
    local rewind = '0-0'
    if #before > 0 then
      rewind = before[1][1]
    end
    redis.call('XACK', KEYS[2], ARGV[2], unpack(ids))
    redis.call('XGROUP', 'SETID', KEYS[2], ARGV[2], rewind)
    handed = #ids
  end
end
redis.call('DEL', KEYS[1])
return {1, handed}
