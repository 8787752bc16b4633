-- Appends messages to partition streams in one step (all or nothing on one node).
-- KEYS: partition streams; ARGV: count, then per message: KEYS index, id, key, priority,
-- content type, headers, payload.
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
local n = tonumber(ARGV[1])
local ids = {}
for i = 0, n - 1 do
  local b = 2 + i * 7
  ids[#ids + 1] = redis.call('XADD', KEYS[tonumber(ARGV[b])], '*', 'id', ARGV[b + 1],
    'k', ARGV[b + 2], 'p', ARGV[b + 3], 'ct', ARGV[b + 4], 'h', ARGV[b + 5], 'd', ARGV[b + 6])
end
return ids
