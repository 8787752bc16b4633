-- Compare-and-set of state entries of one kind, all or nothing.
-- KEYS: 1 versions hash, 2 values hash ("<version>:<bytes>"), 3 ids (lex set)
-- ARGV: 1 n, then per write: id, expectation (new|ver|any), version, value
local n = tonumber(ARGV[1])
local planned = {}
local out = {}
for i = 0, n - 1 do
  local b = 2 + i * 4
  local id = ARGV[b]
  local cur = planned[id]
  if cur == nil then cur = redis.call('HGET', KEYS[1], id) end
  local ok
  if ARGV[b + 1] == 'new' then ok = (cur == false)
  elseif ARGV[b + 1] == 'ver' then ok = (cur == ARGV[b + 2])
  else ok = true end
  if not ok then return {'conflict', tostring(i), cur or ''} end
  local nv = '1'
  if cur then nv = dec_add(cur, 1) end
  planned[id] = nv
  out[#out + 1] = nv
end
local r = {'ok'}
for i = 0, n - 1 do
  local b = 2 + i * 4
  local id = ARGV[b]
  redis.call('HSET', KEYS[1], id, out[i + 1])
  redis.call('HSET', KEYS[2], id, out[i + 1] .. ':' .. ARGV[b + 3])
  redis.call('ZADD', KEYS[3], 0, id)
  r[#r + 1] = out[i + 1]
end
return r
