-- A Redis Function library (loaded once with FUNCTION LOAD; graphq names it
-- after a hash of this file) whose one function applies one graph command
-- atomically: dedupe by operation id, check, resolve
-- conflicts per field, mutate nodes/edges/viewport, bump the version, append to
-- the change log, keep the checksum, record the outcome and publish it.
-- docs/graph.md is the exact semantics; user values arrive as canonical JSON
-- text and are spliced into stored entities, never re-encoded.
-- KEYS[1]: graph meta hash (epoch, version, checksum, viewport)
-- KEYS[2]: nodes hash (id -> node JSON)
-- KEYS[3]: edges hash (id -> edge JSON)
-- KEYS[4]: adjacency hash (node id -> JSON array of edge ids)
-- KEYS[5]: per-field versions hash (n:ID / e:ID / viewport -> JSON)
-- KEYS[6]: change log stream (entry id <version>-0)
-- KEYS[7]: this operation's outcome (string with TTL)
-- KEYS[8]: the sender's undo list
-- KEYS[9]: the sender's redo list
-- KEYS[10]: the conflict log stream (written only when there are conflicts)
-- ARGV[1]: operation id
-- ARGV[2]: user id (plain, [A-Za-z0-9_.:-])
-- ARGV[3]: now, ms (worker clock; stamped as updatedAt)
-- ARGV[4]: epoch for the graph if this command creates it
-- ARGV[5]: settings JSON {maxNodes, maxEdges, logRetention, opTtl, conflictRetention, strategies}
-- ARGV[6]: the operation as JSON (Op::script_op)
-- ARGV[7]: baseVersion, or "" when the client sent none
-- ARGV[8]: client timestamp (integer text, 0 when absent)
-- ARGV[9]: command type
-- ARGV[10]: notification channel
-- ARGV[11]: the command as received (canonical JSON), for subscribers
-- ARGV[12]: graph id
-- ARGV[13]: the sender's notification channel (reverts, and outcomes with conflicts)
-- ARGV[14]: "SPUBLISH" on Redis Cluster (the graph's channel is sharded), else "PUBLISH"
-- ARGV[15]: the sender's outcomes channel (applied without conflicts; only the user's streams listen)
-- Returns: the outcome JSON: {"status":"applied",...} | {"status":"reverted",...} | {"status":"duplicate","stored":...}
--   with "logged":["STRATEGY:outcome",...] added when the conflict log was written (for the metric)


-- Per-call state: library-level so that the helpers below are created once,
-- at load, not on every call; `apply` sets all of it afresh before using it.
local KEYS, ARGV
local OP_ID, USER, NOW, GRAPH_PUBLISH, S, CMD, BASE, QUSER, STRAT, EPOCH, V, VS
local HKEY, cache, original, touched, is_touched, targeted, is_targeted
local fvs, adj, adj_dirty, counts, conflicts, vp, logged
-- The settings text of the last call and its decoded table (the same text every call).
local settings_text


---------------------------------------------------------------- JSON scanning
-- Our JSON has no whitespace; these split it into raw texts without decoding.

local function skip_string(s, i)
  local j = i + 1
  while true do
    local k = string.find(s, '["\\]', j)
    if string.byte(s, k) == 34 then return k + 1 end
    j = k + 2
  end
end

local function skip_value(s, i)
  local c = string.byte(s, i)
  if c == 34 then return skip_string(s, i) end
  if c == 123 or c == 91 then
    local depth, j = 0, i
    while true do
      local k = string.find(s, '[{}%[%]"]', j)
      local b = string.byte(s, k)
      if b == 34 then
        j = skip_string(s, k)
      else
        if b == 123 or b == 91 then depth = depth + 1 else depth = depth - 1 end
        j = k + 1
        if depth == 0 then return j end
      end
    end
  end
  return string.find(s, '[,}%]]', i) or (#s + 1)
end

-- Object text -> list of {quoted key, raw value}, in document order.
local function fields(s)
  local out = {}
  if s == '{}' then return out end
  local i = 2
  while true do
    local kend = skip_string(s, i)
    local vend = skip_value(s, kend + 1)
    out[#out + 1] = {string.sub(s, i, kend - 1), string.sub(s, kend + 1, vend - 1)}
    if string.byte(s, vend) == 125 then return out end
    i = vend + 1
  end
end

-- Array text -> list of raw values.
local function items(s)
  local out = {}
  if s == '[]' then return out end
  local i = 2
  while true do
    local vend = skip_value(s, i)
    out[#out + 1] = string.sub(s, i, vend - 1)
    if string.byte(s, vend) == 93 then return out end
    i = vend + 1
  end
end

local function field_map(s)
  local m = {}
  for _, kv in ipairs(fields(s)) do m[kv[1]] = kv[2] end
  return m
end

local function unquote(s) return string.sub(s, 2, -2) end

-- A data key as a JSON pointer segment (RFC 6901: ~ as ~0, / as ~1).
local function pointer_key(qk)
  return (string.gsub(string.gsub(cjson.decode(qk), '~', '~0'), '/', '~1'))
end

---------------------------------------------------------------- entities

local function decode_data(text)
  local d = {keys = {}, vals = {}}
  for _, kv in ipairs(fields(text)) do
    d.keys[#d.keys + 1] = kv[1]
    d.vals[kv[1]] = kv[2]
  end
  return d
end

local function copy_data(d)
  local c = {keys = {}, vals = {}}
  for i, k in ipairs(d.keys) do c.keys[i] = k; c.vals[k] = d.vals[k] end
  return c
end

-- Entities are stored in one fixed shape (encode_entity below), so one
-- anchored match splits a stored entity; the general scanner above is the
-- fallback for any other text. Ids and user ids hold no quotes, a type is a
-- JSON string or null (its quotes are escaped inside), a position holds two
-- numbers, and the greedy `data` capture stops at the last `,"version":`
-- that the fixed tail follows.
local NODE_SHAPE = '^{"id":"([^"]*)","type":(.-),"position":({[^}]*}),"data":(.*),"version":(%d+),' ..
  '"createdBy":("[^"]*"),"updatedBy":("[^"]*"),"updatedAt":(%d+)}$'
local EDGE_SHAPE = '^{"id":"([^"]*)","source":"([^"]*)","target":"([^"]*)","type":(.-),"data":(.*),"version":(%d+),' ..
  '"createdBy":("[^"]*"),"updatedBy":("[^"]*"),"updatedAt":(%d+)}$'

-- `data` is decoded on first use: most commands never look inside it, and
-- encode_entity splices the stored text back when it was not.
local LAZY_DATA = {__index = function(e, k)
  if k ~= 'data' then return nil end
  local d = decode_data(rawget(e, 'data_text'))
  rawset(e, 'data', d)
  return d
end}

local function decode_entity(kind, json)
  local e
  if kind == 'n' then
    local id, ty, pos, data, ver, cby, uby, uat = string.match(json, NODE_SHAPE)
    if id then
      e = {kind = kind, id = id, type = ty, position = pos, data_text = data, version = ver,
        createdBy = cby, updatedBy = uby, updatedAt = uat}
    end
  else
    local id, src, tgt, ty, data, ver, cby, uby, uat = string.match(json, EDGE_SHAPE)
    if id then
      e = {kind = kind, id = id, source = src, target = tgt, type = ty, data_text = data, version = ver,
        createdBy = cby, updatedBy = uby, updatedAt = uat}
    end
  end
  if e then return setmetatable(e, LAZY_DATA) end
  local f = field_map(json)
  e = {kind = kind, id = unquote(f['"id"']), type = f['"type"'], data = decode_data(f['"data"']),
    version = f['"version"'], createdBy = f['"createdBy"'], updatedBy = f['"updatedBy"'],
    updatedAt = f['"updatedAt"']}
  if kind == 'n' then
    e.position = f['"position"']
  else
    e.source = unquote(f['"source"'])
    e.target = unquote(f['"target"'])
  end
  return e
end

local function encode_data(d)
  local parts = {}
  for i, k in ipairs(d.keys) do parts[i] = k .. ':' .. d.vals[k] end
  return '{' .. table.concat(parts, ',') .. '}'
end

local function encode_entity(e)
  local tail = ',"type":' .. e.type
  if e.kind == 'n' then
    tail = tail .. ',"position":' .. e.position
  end
  local head = '{"id":"' .. e.id .. '"'
  if e.kind == 'e' then
    head = head .. ',"source":"' .. e.source .. '","target":"' .. e.target .. '"'
  end
  local data = rawget(e, 'data')
  return head .. tail .. ',"data":' .. (data and encode_data(data) or e.data_text) .. ',"version":' .. e.version ..
    ',"createdBy":' .. e.createdBy .. ',"updatedBy":' .. e.updatedBy .. ',"updatedAt":' .. e.updatedAt .. '}'
end

local function data_set(d, k, v)
  if d.vals[k] == nil then d.keys[#d.keys + 1] = k end
  d.vals[k] = v
end

local function data_unset(d, k)
  if d.vals[k] == nil then return end
  d.vals[k] = nil
  for i, key in ipairs(d.keys) do
    if key == k then table.remove(d.keys, i); break end
  end
end

local function same_data(a, b)
  if #a.keys ~= #b.keys then return false end
  for _, k in ipairs(a.keys) do
    if a.vals[k] ~= b.vals[k] then return false end
  end
  return true
end

local function same_content(a, b)
  if a.type ~= b.type or not same_data(a.data, b.data) then return false end
  if a.kind == 'n' then return a.position == b.position end
  return a.source == b.source and a.target == b.target
end

---------------------------------------------------------------- working copy
-- Nothing is written until the whole command succeeded.



local function load(kind, id)
  local c = cache[kind][id]
  if c == nil then
    local json = redis.call('HGET', HKEY[kind], id)
    if json then c = decode_entity(kind, json) else c = false end
    cache[kind][id] = c
    original[kind][id] = json or false
  end
  return c
end

local function stored(kind, id)
  load(kind, id)
  return original[kind][id]
end

local function touch(kind, id)
  if not is_touched[kind][id] then
    is_touched[kind][id] = true
    touched[kind][#touched[kind] + 1] = id
  end
end

local function target(kind, id)
  if not is_targeted[kind][id] then
    is_targeted[kind][id] = true
    targeted[kind][#targeted[kind] + 1] = id
  end
end

local function fv_of(kind, id)
  local k = kind .. ':' .. id
  if fvs[k] == nil then
    local raw = redis.call('HGET', KEYS[5], k)
    if raw then fvs[k] = cjson.decode(raw) else fvs[k] = {} end
    if fvs[k].data == nil then fvs[k].data = {} end
  end
  return fvs[k]
end

local function adj_of(id)
  if adj[id] == nil then
    local raw = redis.call('HGET', KEYS[4], id)
    adj[id] = {}
    if raw then
      for _, eid in ipairs(cjson.decode(raw)) do adj[id][#adj[id] + 1] = eid end
    end
  end
  return adj[id]
end

local function adj_remove(node_id, edge_id)
  local list = adj_of(node_id)
  for i, e in ipairs(list) do
    if e == edge_id then table.remove(list, i); adj_dirty[node_id] = true; return end
  end
end

local function count(kind)
  if counts[kind] == nil then counts[kind] = redis.call('HLEN', HKEY[kind]) end
  return counts[kind]
end

local function stamp(e)
  e.version = VS
  e.updatedBy = QUSER
  e.updatedAt = NOW
end

local function fresh_fv(kind, id, e)
  local f = {data = {}}
  f.type = {V, USER}
  if kind == 'n' then f.position = {V, USER} end
  for _, k in ipairs(e.data.keys) do f.data[k] = {V, USER} end
  fvs[kind .. ':' .. id] = f
end

local function fail(code, message, cur)
  return {code = code, message = message, current = cur or {}}
end

---------------------------------------------------------------- conflict log
-- Every conflict decision is logged (KEYS[10]) once the command is decided.
-- A MANUAL conflict stays open, marked in its field's versions (entity:
-- `open` = {path = log id}; viewport: entry[3]), until a later write of
-- the field resolves it. Commands without conflicts or marks pay nothing.
-- `logged`: the records of this call, appended once it is decided.

local function record_conflict(field, client, server, strategy, outcome, entry, fvkey)
  logged[#logged + 1] = {field = field, strategy = strategy, outcome = outcome, fvkey = fvkey,
    text = ',"clientValue":' .. (client or 'null') .. ',"serverValue":' .. (server or 'null') ..
      ',"serverUserId":' .. (entry and cjson.encode(entry[2]) or 'null') ..
      ',"serverVersion":' .. (entry and string.format('%d', entry[1]) or 'null')}
end

local function marks_of(fvkey)
  if fvkey == 'viewport' then return vp.fv end
  return fvs[fvkey]
end

local function open_mark(fvkey, field)
  local m = marks_of(fvkey)
  if not m then return nil end
  if fvkey == 'viewport' then return m[3] end
  return m.open and m.open[field]
end

local function set_mark(fvkey, field, id)
  local m = marks_of(fvkey)
  if fvkey == 'viewport' then m[3] = id; return end
  m.open = m.open or {}
  m.open[field] = id
  if next(m.open) == nil then m.open = nil end
end

-- A field is being written: an open conflict on it is resolved by this value.
local function settle(fvkey, field, value)
  local id = fvkey and open_mark(fvkey, field)
  if id then
    logged[#logged + 1] = {field = field, resolves = id, value = value or 'null'}
    if fvkey ~= 'viewport' then set_mark(fvkey, field, nil) end
  end
end

-- Appends the records to the log, marks open conflicts, and returns the
-- `"logged"` part of the script's answer. `version`: the graph's after the command.
local function log_conflicts(version)
  if #logged == 0 then return '' end
  local R = S.conflictRetention
  local head = '{"graphId":' .. cjson.encode(ARGV[12]) .. ',"operationId":' .. cjson.encode(OP_ID) ..
    ',"userId":' .. QUSER .. ',"version":' .. string.format('%d', version) .. ',"at":' .. NOW
  local function resolution(r, superseded_by)
    redis.call('XADD', KEYS[10], 'MAXLEN', '~', R, '*', 'resolution', head .. ',"field":' ..
      cjson.encode(r.field) .. ',"resolves":"' .. r.resolves .. '","value":' .. r.value ..
      ',"supersededBy":' .. (superseded_by and ('"' .. superseded_by .. '"') or 'null') .. '}')
  end
  local kinds, save = {}, {}
  for _, r in ipairs(logged) do
    if r.resolves then
      resolution(r, nil)
      kinds[#kinds + 1] = '"MANUAL:resolved"'
    else
      local id = redis.call('XADD', KEYS[10], 'MAXLEN', '~', R, '*', 'conflict', head .. ',"field":' ..
        cjson.encode(r.field) .. ',"strategy":"' .. r.strategy .. '","outcome":"' .. r.outcome ..
        '","baseVersion":' .. (ARGV[7] ~= '' and ARGV[7] or 'null') .. r.text .. '}')
      kinds[#kinds + 1] = '"' .. r.strategy .. ':' .. r.outcome .. '"'
      if r.outcome == 'open' then
        local old = open_mark(r.fvkey, r.field)
        if old then
          resolution({field = r.field, resolves = old, value = 'null'}, id)
          kinds[#kinds + 1] = '"MANUAL:resolved"'
        end
        set_mark(r.fvkey, r.field, id)
        save[r.fvkey] = true
      end
    end
  end
  for fvkey in pairs(save) do
    if fvkey == 'viewport' then
      redis.call('HSET', KEYS[5], fvkey, cjson.encode(vp.fv))
    elseif cache[string.sub(fvkey, 1, 1)][string.sub(fvkey, 3)] then
      redis.call('HSET', KEYS[5], fvkey, cjson.encode(fvs[fvkey]))
    end
  end
  return ',"logged":[' .. table.concat(kinds, ',') .. ']'
end

-- The script's answer: the outcome, with what the conflict log recorded.
local function answer(outcome, log_part)
  if log_part == '' then return outcome end
  return string.sub(outcome, 1, -2) .. log_part .. '}'
end

local function add_conflict(field, client, server, strategy, outcome, entry, fvkey)
  conflicts[#conflicts + 1] = '{"field":' .. cjson.encode(field) .. ',"clientValue":' .. (client or 'null') ..
    ',"serverValue":' .. (server or 'null') .. ',"strategy":"' .. strategy .. '"}'
  record_conflict(field, client, server, strategy, outcome or 'kept', entry, fvkey)
end

-- Was this field set after the client's base version by someone else?
local function concurrent(entry)
  return BASE ~= nil and entry ~= nil and entry[1] > BASE and entry[2] ~= USER
end

-- Decides one field under a strategy: returns whether to apply the new value.
-- `entry`: the field's version entry; `fvkey`: where its open mark lives.
local function decide(strategy, entry, field, client, server, fvkey)
  local is_concurrent = concurrent(entry)
  if strategy == 'LAST_WRITE_WINS' or strategy == 'CLIENT_WINS' then
    if is_concurrent then
      if strategy == 'CLIENT_WINS' then
        add_conflict(field, client, server, strategy, 'applied', entry, fvkey)
      else
        record_conflict(field, client, server, strategy, 'applied', entry, fvkey)
      end
    end
    settle(fvkey, field, client)
    return true
  end
  if is_concurrent then
    add_conflict(field, client, server, strategy, strategy == 'MANUAL' and 'open' or 'kept', entry, fvkey)
    return false
  end
  settle(fvkey, field, client)
  return true
end

---------------------------------------------------------------- operations

local function delete_edge_now(eid)
  local e = load('e', eid)
  if not e then return end
  adj_remove(e.source, eid)
  if e.target ~= e.source then adj_remove(e.target, eid) end
  cache.e[eid] = false
  counts.e = count('e') - 1
  touch('e', eid)
end

local function delete_node_now(id)
  cache.n[id] = false
  touch('n', id)
  local edges = {}
  for i, eid in ipairs(adj_of(id)) do edges[i] = eid end
  for _, eid in ipairs(edges) do delete_edge_now(eid) end
  adj[id] = {}
  adj_dirty[id] = true
  counts.n = count('n') - 1
end

local function attach(e)
  local list = adj_of(e.source)
  list[#list + 1] = e.id
  adj_dirty[e.source] = true
  if e.target ~= e.source then
    list = adj_of(e.target)
    list[#list + 1] = e.id
    adj_dirty[e.target] = true
  end
end

local function new_entity(kind, id, op)
  local e = {kind = kind, id = id, type = op.type, data = {keys = {}, vals = {}}, createdBy = QUSER}
  for _, kv in ipairs(op.data) do data_set(e.data, kv[1], kv[2]) end
  if kind == 'n' then e.position = op.position else e.source = op.source; e.target = op.target end
  stamp(e)
  return e
end

-- UPDATE_NODE / UPDATE_EDGE: field by field under the strategies.
local function update(kind, op)
  local word = kind == 'n' and 'node' or 'edge'
  local id = op.id
  local cur = load(kind, id)
  if not cur then
    return fail('NOT_FOUND', word .. ' ' .. id .. ' does not exist', {[kind] = {id}})
  end
  target(kind, id)
  local fv = fv_of(kind, id)
  local base_path = (kind == 'n' and '/nodes/' or '/edges/') .. id
  local changed = false
  local function scalar(name, value)
    if value == nil then return end
    local strategy = STRAT[word .. '.' .. name]
    if decide(strategy, fv[name], base_path .. '/' .. name, value, cur[name], kind .. ':' .. id) then
      cur[name] = value
      fv[name] = {V, USER}
      changed = true
    end
  end
  scalar('type', op.type)
  if kind == 'n' then scalar('position', op.position) end
  if op.hasData then
    local data_strategy = STRAT[word .. '.data']
    if data_strategy == 'MERGE' then
      local function key(qk, value)
        local strategy = STRAT[word .. '.data.' .. cjson.decode(qk)] or 'MERGE'
        local path = base_path .. '/data/' .. pointer_key(qk)
        if decide(strategy, fv.data[qk], path, value, cur.data.vals[qk], kind .. ':' .. id) then
          if value == nil then data_unset(cur.data, qk) else data_set(cur.data, qk, value) end
          fv.data[qk] = {V, USER}
          changed = true
        end
      end
      for _, kv in ipairs(op.data) do key(kv[1], kv[2]) end
      for _, qk in ipairs(op.unset) do key(qk, nil) end
    else
      local any = nil
      for _, entry in pairs(fv.data) do
        if concurrent(entry) and (any == nil or entry[1] > any[1]) then any = entry end
      end
      local parts = {}
      for _, kv in ipairs(op.data) do parts[#parts + 1] = kv[1] .. ':' .. kv[2] end
      for _, qk in ipairs(op.unset) do parts[#parts + 1] = qk .. ':null' end
      local patch = '{' .. table.concat(parts, ',') .. '}'
      if decide(data_strategy, any, base_path .. '/data', patch, encode_data(cur.data), kind .. ':' .. id) then
        for _, kv in ipairs(op.data) do data_set(cur.data, kv[1], kv[2]); fv.data[kv[1]] = {V, USER} end
        for _, qk in ipairs(op.unset) do data_unset(cur.data, qk); fv.data[qk] = {V, USER} end
        changed = true
      end
    end
  end
  if changed then
    stamp(cur)
    touch(kind, id)
  end
  return nil
end

local function viewport_now()
  if not vp.loaded then
    vp.loaded = true
    vp.original = redis.call('HGET', KEYS[1], 'viewport') or false
    vp.value = vp.original
  end
  return vp.value
end

local function vp_fv()
  if vp.fv == nil then
    local raw = redis.call('HGET', KEYS[5], 'viewport')
    if raw then vp.fv = cjson.decode(raw) else vp.fv = false end
  end
  return vp.fv
end

local run_op

local handlers = {}

handlers.CREATE_NODE = function(op)
  if load('n', op.id) then
    return fail('ALREADY_EXISTS', 'node ' .. op.id .. ' already exists', {n = {op.id}})
  end
  if count('n') >= S.maxNodes then
    return fail('LIMIT_EXCEEDED', 'the graph already has ' .. string.format('%d', S.maxNodes) .. ' nodes', {n = {op.id}})
  end
  local e = new_entity('n', op.id, op)
  cache.n[op.id] = e
  counts.n = count('n') + 1
  fresh_fv('n', op.id, e)
  touch('n', op.id)
end

handlers.UPDATE_NODE = function(op) return update('n', op) end

handlers.DELETE_NODE = function(op)
  if not load('n', op.id) then
    return fail('NOT_FOUND', 'node ' .. op.id .. ' does not exist', {n = {op.id}})
  end
  delete_node_now(op.id)
end

handlers.CREATE_EDGE = function(op)
  if load('e', op.id) then
    return fail('ALREADY_EXISTS', 'edge ' .. op.id .. ' already exists', {e = {op.id}})
  end
  local ends = {op.source, op.target}
  if op.source == op.target then ends = {op.source} end
  if not load('n', op.source) then
    return fail('NOT_FOUND', 'source node ' .. op.source .. ' does not exist', {n = ends})
  end
  if not load('n', op.target) then
    return fail('NOT_FOUND', 'target node ' .. op.target .. ' does not exist', {n = ends})
  end
  if count('e') >= S.maxEdges then
    return fail('LIMIT_EXCEEDED', 'the graph already has ' .. string.format('%d', S.maxEdges) .. ' edges', {e = {op.id}})
  end
  local e = new_entity('e', op.id, op)
  cache.e[op.id] = e
  counts.e = count('e') + 1
  attach(e)
  fresh_fv('e', op.id, e)
  touch('e', op.id)
end

handlers.UPDATE_EDGE = function(op) return update('e', op) end

handlers.DELETE_EDGE = function(op)
  if not load('e', op.id) then
    return fail('NOT_FOUND', 'edge ' .. op.id .. ' does not exist', {e = {op.id}})
  end
  delete_edge_now(op.id)
end

handlers.UPDATE_VIEWPORT = function(op)
  local cur = viewport_now()
  vp.targeted = true
  if decide(STRAT['viewport'], vp_fv() or nil, '/viewport', op.viewport, cur or nil, 'viewport') then
    vp.value = op.viewport
    vp.touched = true
    vp.fv = {V, USER}
  end
end

handlers.BATCH_UPDATE = function(op)
  for i, inner in ipairs(op.ops) do
    local err = run_op(inner)
    if err then
      err.message = 'operation ' .. (i - 1) .. ': ' .. err.message
      return err
    end
  end
end

run_op = function(op) return handlers[op.t](op) end

---------------------------------------------------------------- undo / redo

-- Reverts change C where the graph still shows what C did (docs/graph.md).
local function revert_change(text)
  local c = field_map(text)
  local after = {n = {}, e = {}}
  for _, json in ipairs(items(c['"nodes"'])) do after.n[unquote(field_map(json)['"id"'])] = json end
  for _, json in ipairs(items(c['"edges"'])) do after.e[unquote(field_map(json)['"id"'])] = json end
  local undo = field_map(c['"undo"'])
  local before = {n = fields(undo['"nodes"']), e = fields(undo['"edges"'])}
  for kind, list in pairs(before) do
    for _, kv in ipairs(list) do
      target(kind, unquote(kv[1]))
    end
  end
  local function path(kind, id) return (kind == 'n' and '/nodes/' or '/edges/') .. id end

  local function recreate(kind, id, b)
    local cur = load(kind, id)
    if cur then
      add_conflict(path(kind, id), b, stored(kind, id), 'SERVER_WINS')
      return
    end
    local e = decode_entity(kind, b)
    if kind == 'e' and (not load('n', e.source) or not load('n', e.target)) then
      add_conflict(path(kind, id), b, nil, 'SERVER_WINS')
      return
    end
    stamp(e)
    cache[kind][id] = e
    counts[kind] = count(kind) + 1
    if kind == 'e' then attach(e) end
    fresh_fv(kind, id, e)
    touch(kind, id)
  end

  local function revert_update(kind, id, b, a)
    local cur = load(kind, id)
    if not cur then
      add_conflict(path(kind, id), b, nil, 'SERVER_WINS')
      return
    end
    local B, A = decode_entity(kind, b), decode_entity(kind, a)
    local fv = fv_of(kind, id)
    local changed = false
    local function field(name)
      if A[name] == B[name] then return end
      if cur[name] == A[name] then
        settle(kind .. ':' .. id, path(kind, id) .. '/' .. name, B[name])
        cur[name] = B[name]; fv[name] = {V, USER}; changed = true
      elseif cur[name] ~= B[name] then
        add_conflict(path(kind, id) .. '/' .. name, B[name], cur[name], 'SERVER_WINS')
      end
    end
    field('type')
    if kind == 'n' then field('position') end
    local function key(qk)
      local bv, av, cv = B.data.vals[qk], A.data.vals[qk], cur.data.vals[qk]
      if av == bv then return end
      if cv == av then
        settle(kind .. ':' .. id, path(kind, id) .. '/data/' .. pointer_key(qk), bv)
        if bv == nil then data_unset(cur.data, qk) else data_set(cur.data, qk, bv) end
        fv.data[qk] = {V, USER}
        changed = true
      elseif cv ~= bv then
        add_conflict(path(kind, id) .. '/data/' .. pointer_key(qk), bv, cv, 'SERVER_WINS')
      end
    end
    for _, qk in ipairs(B.data.keys) do key(qk) end
    for _, qk in ipairs(A.data.keys) do
      if B.data.vals[qk] == nil then key(qk) end
    end
    if changed then
      stamp(cur)
      touch(kind, id)
    end
  end

  local function remove_created(kind, id, a)
    local cur = load(kind, id)
    if not cur then return end
    if same_content(cur, decode_entity(kind, a)) then
      if kind == 'n' then delete_node_now(id) else delete_edge_now(id) end
    else
      add_conflict(path(kind, id), nil, stored(kind, id), 'SERVER_WINS')
    end
  end

  local function each(kind, want_before, want_after, fn)
    for _, kv in ipairs(before[kind]) do
      local id = unquote(kv[1])
      local b = kv[2] ~= 'null' and kv[2] or nil
      local a = after[kind][id]
      if (b ~= nil) == want_before and (a ~= nil) == want_after then fn(kind, id, b, a) end
    end
  end
  each('n', true, false, recreate)
  each('n', true, true, revert_update)
  each('e', true, true, revert_update)
  each('e', true, false, recreate)
  each('e', false, true, function(kind, id, _, a) remove_created(kind, id, a) end)
  each('n', false, true, function(kind, id, _, a) remove_created(kind, id, a) end)

  if undo['"viewport"'] ~= nil then
    vp.targeted = true
    local b = undo['"viewport"']
    if b == 'null' then b = nil end
    local a = c['"viewport"']
    if a == 'null' then a = nil end
    local cur = viewport_now() or nil
    if a ~= b then
      if cur == a then
        settle('viewport', '/viewport', b)
        vp.value = b or false
        vp.touched = true
        vp.fv = {V, USER}
      elseif cur ~= b then
        add_conflict('/viewport', b, cur, 'SERVER_WINS')
      end
    end
  end
end

handlers.UNDO = function()
  local text = redis.call('LPOP', KEYS[8])
  if not text then return fail('INVALID', 'nothing to undo') end
  revert_change(text)
end

handlers.REDO = function()
  local text = redis.call('LPOP', KEYS[9])
  if not text then return fail('INVALID', 'nothing to redo') end
  revert_change(text)
end

---------------------------------------------------------------- outcome

local function current_json(ids, with_viewport)
  local parts = {}
  for _, kind in ipairs({'n', 'e'}) do
    local inner = {}
    for _, id in ipairs((ids or {})[kind] or {}) do
      inner[#inner + 1] = '"' .. id .. '":' .. (stored(kind, id) or 'null')
    end
    parts[#parts + 1] = (kind == 'n' and '"nodes":{' or '"edges":{') .. table.concat(inner, ',') .. '}'
  end
  if with_viewport then
    viewport_now()
    parts[#parts + 1] = '"viewport":' .. (vp.original or 'null')
  end
  return '{' .. table.concat(parts, ',') .. '}'
end

-- Applied outcomes go to the graph's subscribers; every outcome also goes
-- to the sender wherever it is connected (its user channel: REVERT,
-- CONFLICT, and the sender's own stream of outcomes).
local function publish(outcome, applied)
  local note = '{"graphId":"' .. ARGV[12] .. '","epoch":' .. cjson.encode(EPOCH) ..
    ',"operationId":' .. cjson.encode(OP_ID) .. ',"userId":' .. QUSER .. ',"type":"' .. ARGV[9] .. '","timestamp":' .. ARGV[8] .. ',"appliedAt":' .. ARGV[3] ..
    ',"command":' .. ARGV[11] .. ',"outcome":' .. outcome .. '}'
  if applied then redis.call(GRAPH_PUBLISH, ARGV[10], note) end
  -- Each outcome on one of the sender's channels: sockets listen to the
  -- first only (they hear applied commands from the graph's channel).
  if not applied or #conflicts > 0 then
    redis.call('PUBLISH', ARGV[13], note)
  else
    redis.call('PUBLISH', ARGV[15], note)
  end
end

local function revert(err, current)
  local message = cjson.encode(err.message)
  local outcome = '{"status":"reverted","code":"' .. err.code .. '","message":' .. message ..
    ',"current":' .. current .. ',"conflicts":[' .. table.concat(conflicts, ',') .. ']}'
  redis.call('SET', KEYS[7], '{"status":"reverted","code":"' .. err.code .. '","message":' .. message .. '}',
    'EX', S.opTtl)
  publish(outcome, false)
  return answer(outcome, err.code == 'CONFLICT' and log_conflicts(V - 1) or '')
end

local H48 = 281474976710656
local function h(x) return tonumber(string.sub(redis.sha1hex(x), 1, 12), 16) end

local function apply(keys, args)
  KEYS, ARGV = keys, args
  OP_ID, USER, NOW = ARGV[1], ARGV[2], ARGV[3]
  GRAPH_PUBLISH = ARGV[14] == 'SPUBLISH' and 'SPUBLISH' or 'PUBLISH'
  if ARGV[5] ~= settings_text then S = cjson.decode(ARGV[5]); settings_text = ARGV[5] end
  CMD = cjson.decode(ARGV[6])
  BASE = nil
  if ARGV[7] ~= '' then BASE = tonumber(ARGV[7]) end
  QUSER = '"' .. USER .. '"'
  STRAT = S['strategies']

  -- An outcome decides the operation for good, except DEAD_LETTERED: that
  -- records that the engine gave up, not that the command was refused, so a
  -- replay from the dead-letter stream gets its chance.
  local prev = redis.call('GET', KEYS[7])
  if prev and not string.find(prev, '"code":"DEAD_LETTERED"', 1, true) then
    return '{"status":"duplicate","stored":' .. prev .. '}'
  end

  local meta = redis.call('HMGET', KEYS[1], 'epoch', 'version', 'checksum')
  EPOCH = meta[1]
  if not EPOCH then
    EPOCH = ARGV[4]
    meta = {EPOCH, '0', '0'}
    redis.call('HSET', KEYS[1], 'epoch', EPOCH, 'version', 0, 'checksum', 0)
  end
  V = tonumber(meta[2]) + 1
  VS = string.format('%d', V)
  HKEY = {n = KEYS[2], e = KEYS[3]}
  cache = {n = {}, e = {}}       -- id -> entity table, or false when absent
  original = {n = {}, e = {}}    -- id -> stored JSON, or false
  touched = {n = {}, e = {}}     -- ids in first-touch order
  is_touched = {n = {}, e = {}}
  targeted = {n = {}, e = {}}    -- ids named by updates, for a CONFLICT revert
  is_targeted = {n = {}, e = {}}
  fvs = {}                       -- 'n:ID' -> per-field versions
  adj = {}                       -- node id -> list of edge ids
  adj_dirty = {}
  counts = {}
  conflicts = {}
  logged = {}
  vp = {loaded = false, touched = false, targeted = false}
  local err = run_op(CMD)
  if err then
    return revert(err, current_json(err.current, false))
  end

  local checksum = tonumber(meta[3])

  local lists = {n = {}, e = {}}
  local removed = {n = {}, e = {}}
  local undo_parts = {n = {}, e = {}}
  for _, kind in ipairs({'n', 'e'}) do
    for _, id in ipairs(touched[kind]) do
      local old, now = original[kind][id], cache[kind][id]
      undo_parts[kind][#undo_parts[kind] + 1] = '"' .. id .. '":' .. (old or 'null')
      if old or now then
        if old then checksum = (checksum - h(kind .. old)) % H48 end
        if now then
          local json = encode_entity(now)
          redis.call('HSET', HKEY[kind], id, json)
          redis.call('HSET', KEYS[5], kind .. ':' .. id, cjson.encode(fvs[kind .. ':' .. id]))
          checksum = (checksum + h(kind .. json)) % H48
          lists[kind][#lists[kind] + 1] = json
        else
          redis.call('HDEL', HKEY[kind], id)
          redis.call('HDEL', KEYS[5], kind .. ':' .. id)
          removed[kind][#removed[kind] + 1] = '"' .. id .. '"'
        end
      end
    end
  end

  if #touched.n + #touched.e == 0 and not vp.touched then
    -- Nothing was applied: every field lost to a newer change, or an undo
    -- found nothing of its change left.
    local message = 'every change conflicted with a newer one'
    if CMD.t == 'UNDO' or CMD.t == 'REDO' then message = 'the graph no longer shows that change' end
    return revert(fail('CONFLICT', message), current_json(targeted, vp.targeted))
  end

  for id in pairs(adj_dirty) do
    if load('n', id) and #adj[id] > 0 then
      redis.call('HSET', KEYS[4], id, cjson.encode(adj[id]))
    else
      redis.call('HDEL', KEYS[4], id)
    end
  end

  local vp_part, vp_undo = '', ''
  if vp.touched then
    if vp.original then checksum = (checksum - h('v' .. vp.original)) % H48 end
    if vp.value then
      redis.call('HSET', KEYS[1], 'viewport', vp.value)
      redis.call('HSET', KEYS[5], 'viewport', cjson.encode(vp.fv))
      checksum = (checksum + h('v' .. vp.value)) % H48
    else
      redis.call('HDEL', KEYS[1], 'viewport')
      redis.call('HSET', KEYS[5], 'viewport', cjson.encode(vp.fv))
    end
    vp_part = ',"viewport":' .. (vp.value or 'null')
    vp_undo = ',"viewport":' .. (vp.original or 'null')
  end

  local change = '{"nodes":[' .. table.concat(lists.n, ',') .. '],"edges":[' .. table.concat(lists.e, ',') ..
    '],"removedNodes":[' .. table.concat(removed.n, ',') .. '],"removedEdges":[' .. table.concat(removed.e, ',') ..
    ']' .. vp_part .. ',"undo":{"nodes":{' .. table.concat(undo_parts.n, ',') .. '},"edges":{' ..
    table.concat(undo_parts.e, ',') .. '}' .. vp_undo .. '}}'

  redis.call('HSET', KEYS[1], 'version', V, 'checksum', string.format('%d', checksum))
  redis.call('XADD', KEYS[6], 'MAXLEN', '~', S.logRetention, VS .. '-0', 'operationId', OP_ID, 'userId', USER,
    'type', ARGV[9], 'timestamp', ARGV[8], 'change', change)

  -- Undo and redo lists keep the newest 100 changes (trimmed only when
  -- longer, which is rare: one LPUSH per command).
  local list = KEYS[8]
  if CMD.t == 'UNDO' then list = KEYS[9] end
  if redis.call('LPUSH', list, change) > 100 then redis.call('LTRIM', list, 0, 99) end
  if CMD.t ~= 'UNDO' and CMD.t ~= 'REDO' then redis.call('DEL', KEYS[9]) end

  local outcome = '{"status":"applied","version":' .. VS .. ',"change":' .. change .. ',"conflicts":[' ..
    table.concat(conflicts, ',') .. ']}'
  redis.call('SET', KEYS[7], '{"status":"applied","version":' .. VS .. '}', 'EX', S.opTtl)
  publish(outcome, true)
  return answer(outcome, log_conflicts(V))
end

redis.register_function(FUNCTION_NAME, apply)
