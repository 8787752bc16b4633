-- Declares an index and indexes the existing documents the client read at revision ARGV[1].
-- KEYS: 1 documents, 2 members, 3 index entries, 4 index declarations, 5 revision
-- ARGV: 1 revision read ('' none), 2 field, 3 type, then id/member pairs
local r = redis.call('GET', KEYS[5]) or ''
if r ~= ARGV[1] then return {'retry'} end
local cur = redis.call('HGET', KEYS[4], ARGV[2])
if cur then
  if cur == ARGV[3] then return {'ok'} end
  return {'conflict', cur}
end
for i = 4, #ARGV, 2 do
  local id = ARGV[i]
  local m = ARGV[i + 1]
  local old = redis.call('HGET', KEYS[2], id)
  local list = {}
  if old then list = cjson.decode(old) end
  list[#list + 1] = m
  redis.call('HSET', KEYS[2], id, cjson.encode(list))
  redis.call('ZADD', KEYS[3], 0, m)
end
redis.call('HSET', KEYS[4], ARGV[2], ARGV[3])
redis.call('INCR', KEYS[5])
return {'ok'}
