-- Appends messages to partition streams in one step (all or nothing on one node).
-- KEYS: partition streams; ARGV: per stream a count n, then n packed messages (each
-- entry's one field `m`, see codec.rs).
-- Several streams: check them all before writing any. One stream: its first XADD fails
-- before anything is written.
if #KEYS > 1 then
  for _, s in ipairs(KEYS) do
    local t = redis.call('TYPE', s).ok
    if t ~= 'none' and t ~= 'stream' then
      return redis.error_reply('WRONGTYPE ' .. s .. ' is not a stream')
    end
  end
end
-- Per stream (in KEYS order): the count of its messages, then theirs.
local a = 1
for _, s in ipairs(KEYS) do
  local n = tonumber(ARGV[a])
  a = a + 1
  for _ = 1, n do
    redis.call('XADD', s, '*', 'm', ARGV[a])
    a = a + 1
  end
end
-- The count only: the ids are not needed, and building and parsing them costs.
return a
