-- Removes documents expired at ARGV[1] (ms) with their index entries; returns how many.
-- KEYS: 1 documents, 2 members, 3 index entries, 4 expiry, 5 revision
local ids = redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', ARGV[1])
local n = 0
for _, id in ipairs(ids) do
  local old = redis.call('HGET', KEYS[2], id)
  if old then
    for _, m in ipairs(cjson.decode(old)) do redis.call('ZREM', KEYS[3], m) end
  end
  n = n + redis.call('HDEL', KEYS[1], id)
  redis.call('HDEL', KEYS[2], id)
  redis.call('ZREM', KEYS[4], id)
end
if n > 0 then redis.call('INCR', KEYS[5]) end
return n
