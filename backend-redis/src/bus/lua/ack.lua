-- Acknowledges handled entries, many in one call: per partition, if the token still holds
-- its lease, XACK the entries and forget their counters and retry schedules. The ids go
-- from ARGV to the commands by unpack, never through a Lua loop.
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
    local retry = redis.call('EXISTS', r) == 1
    for c = a, a + n - 1, 1000 do
      local e = math.min(c + 999, a + n - 1)
      redis.call('XACK', s, group, unpack(ARGV, c, e))
      redis.call('HDEL', at, unpack(ARGV, c, e))
      if retry then redis.call('ZREM', r, unpack(ARGV, c, e)) end
    end
    out[#out + 1] = {'ok', stats(s, group, at, true)}
  end
  a = a + n
end
return out
