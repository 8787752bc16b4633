-- Acknowledges handled entries, many in one call: per partition, if the token still holds
-- its lease, XACK the entries and forget their counters and retry schedules.
-- KEYS: per partition stream, lease, attempts, retry; ARGV: group, token, then per
-- partition a count n and n entry ids. Returns per partition {'lost'} or {'ok', stats}.
local group, token = ARGV[1], ARGV[2]
local out, a = {}, 3
for i = 1, #KEYS, 4 do
  local s, l, at, r = KEYS[i], KEYS[i + 1], KEYS[i + 2], KEYS[i + 3]
  local n = tonumber(ARGV[a])
  a = a + 1
  if redis.call('GET', l) ~= token then
    out[#out + 1] = {'lost'}
  else
    local ids = {}
    for j = 0, n - 1 do ids[#ids + 1] = ARGV[a + j] end
    each_chunk(ids, function(...) redis.call('XACK', s, group, ...) end)
    each_chunk(ids, function(...) redis.call('HDEL', at, ...) end)
    if redis.call('EXISTS', r) == 1 then
      each_chunk(ids, function(...) redis.call('ZREM', r, ...) end)
    end
    out[#out + 1] = {'ok', stats(s, group, at, true)}
  end
  a = a + n
end
return out
