-- Acknowledges handled entries, many in one call: per partition, if the token still holds
-- its lease, XACK the entries and forget their counters and retry schedules. The ids go
-- from ARGV to the commands by unpack, never through a Lua loop.
-- The stats (XINFO GROUPS, parsed in Lua: dearer than the acks of a few entries) only where
-- the consumer asks for them: when its window of the partition empties, and now and then.
-- KEYS: per partition stream, lease, attempts, retry; ARGV: group, token, then per
-- partition a count n, '1' for stats or '0', and n entry ids. Returns per partition
-- {'lost'} or {'ok', stats (empty when not asked for)}.
local group, token = ARGV[1], ARGV[2]
local out, a = {}, 3
for i = 1, #KEYS, 4 do
  local s, l, at, r = KEYS[i], KEYS[i + 1], KEYS[i + 2], KEYS[i + 3]
  local n, want = tonumber(ARGV[a]), ARGV[a + 1] == '1'
  a = a + 2
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
    if want then
      out[#out + 1] = {'ok', stats(s, group, at, true)}
    else
      -- The version still moves: a stats answer computed before this ack is older.
      redis.call('HINCRBY', at, '#v', 1)
      out[#out + 1] = {'ok', {}}
    end
  end
  a = a + n
end
return out
