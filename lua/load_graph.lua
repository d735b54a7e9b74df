-- Creates a whole graph at once (`graphq graph load`): entities, adjacency,
-- per-field versions and meta at a new epoch, with a snapshot of it as the
-- base `graph verify` replays from; the change log starts empty. Refuses when
-- the graph exists, unless told to replace it: then every key of the old
-- graph named here goes first. The texts arrive exactly as they are stored.
-- KEYS[1]: graph meta hash (epoch, version, checksum, viewport)
-- KEYS[2]: nodes hash
-- KEYS[3]: edges hash
-- KEYS[4]: adjacency hash
-- KEYS[5]: per-field versions hash
-- KEYS[6]: change log stream
-- KEYS[7]: snapshot string
-- KEYS[8...]: other keys of the old graph to delete when replacing (undo and
--   redo lists, analytics records, the conflict log)
-- ARGV[1]: "1" to replace an existing graph, "0" to refuse
-- ARGV[2]: the new epoch
-- ARGV[3]: version
-- ARGV[4]: checksum (decimal)
-- ARGV[5]: viewport JSON, or "" for none
-- ARGV[6]: snapshot JSON
-- ARGV[7], ARGV[8], ARGV[9], ARGV[10]: how many nodes, edges, adjacency
--   entries and per-field version entries follow
-- ARGV[11...]: id, text pairs: the nodes, then the edges, the adjacency
--   entries and the per-field versions, in that order
-- Returns: "created", "replaced", or "exists" (nothing written)

local existed = redis.call('EXISTS', KEYS[1]) == 1
if existed and ARGV[1] ~= '1' then
  return 'exists'
end

for i = 1, #KEYS do
  if i ~= 7 then redis.call('DEL', KEYS[i]) end
end

-- HSET in slices: unpack has a limit on how many values it returns.
local SLICE = 500
local at = 11
for h, count_at in ipairs({7, 8, 9, 10}) do
  local key = KEYS[h + 1]
  local left = tonumber(ARGV[count_at])
  while left > 0 do
    local n = math.min(left, SLICE)
    local args = {}
    for j = 0, 2 * n - 1 do args[j + 1] = ARGV[at + j] end
    redis.call('HSET', key, unpack(args))
    at = at + 2 * n
    left = left - n
  end
end

redis.call('HSET', KEYS[1], 'epoch', ARGV[2], 'version', ARGV[3], 'checksum', ARGV[4])
if ARGV[5] ~= '' then
  redis.call('HSET', KEYS[1], 'viewport', ARGV[5])
end
redis.call('SET', KEYS[7], ARGV[6])

if existed then return 'replaced' end
return 'created'
