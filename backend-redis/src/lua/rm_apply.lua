-- Applies read-model changes and (optionally) writes a checkpoint, atomically.
-- The client validated everything against what it read; this script checks that nothing it
-- relied on changed (stored checkpoint, lease epoch, index declarations) and answers
-- 'retry' otherwise, before its first write.
-- KEYS: 1 checkpoints hash, 2 lease epochs hash, then 6 per collection:
--       documents, members, index entries, index declarations, expiry, revision
-- ARGV: checkpoint name ('' for none), expected stored checkpoint ('*' no check, '' missing),
--       expected lease epoch, new checkpoint ('' deletes it), now (ms),
--       number of collections, per collection: n fields then field/type pairs,
--       number of changes, per change: collection index, op (u|d), id, document, expiry, members
local p = 1
local function nextarg()
  local a = ARGV[p]
  p = p + 1
  return a
end
local name = nextarg()
local expected = nextarg()
local epoch = nextarg()
local newcp = nextarg()
local now = tonumber(nextarg())
if name ~= '' then
  local stored = redis.call('HGET', KEYS[1], name) or ''
  if expected ~= '*' and stored ~= expected then return {'retry'} end
  local cur = redis.call('HGET', KEYS[2], name) or '0'
  if cur ~= epoch then return {'retry'} end
end
local ncoll = tonumber(nextarg())
for c = 1, ncoll do
  local k = 2 + (c - 1) * 6
  local nf = tonumber(nextarg())
  if redis.call('HLEN', KEYS[k + 4]) ~= nf then return {'retry'} end
  for f = 1, nf do
    local field = nextarg()
    local ty = nextarg()
    if redis.call('HGET', KEYS[k + 4], field) ~= ty then return {'retry'} end
  end
end
local nch = tonumber(nextarg())
local removed = 0
for i = 1, nch do
  local c = tonumber(nextarg())
  local op = nextarg()
  local id = nextarg()
  local doc = nextarg()
  local exp = nextarg()
  local members = nextarg()
  local k = 2 + (c - 1) * 6
  local old = redis.call('HGET', KEYS[k + 2], id)
  if old then
    for _, m in ipairs(cjson.decode(old)) do redis.call('ZREM', KEYS[k + 3], m) end
  end
  if op == 'u' then
    redis.call('HSET', KEYS[k + 1], id, doc)
    local list = cjson.decode(members)
    if #list > 0 then
      redis.call('HSET', KEYS[k + 2], id, members)
      for _, m in ipairs(list) do redis.call('ZADD', KEYS[k + 3], 0, m) end
    else
      redis.call('HDEL', KEYS[k + 2], id)
    end
    if exp == '' then
      redis.call('ZREM', KEYS[k + 5], id)
    else
      redis.call('ZADD', KEYS[k + 5], exp, id)
    end
  else
    if redis.call('HDEL', KEYS[k + 1], id) == 1 then
      local at = redis.call('ZSCORE', KEYS[k + 5], id)
      if (not at) or tonumber(at) > now then removed = removed + 1 end
    end
    redis.call('HDEL', KEYS[k + 2], id)
    redis.call('ZREM', KEYS[k + 5], id)
  end
  redis.call('INCR', KEYS[k + 6])
end
if name ~= '' then
  if newcp == '' then
    redis.call('HDEL', KEYS[1], name)
  else
    redis.call('HSET', KEYS[1], name, newcp)
  end
end
return {'ok', removed}
