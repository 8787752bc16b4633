-- Imports a commit with explicit versions, ids and timestamps (Admin::import_commit).
-- KEYS: 1 head, 2 events, 3 ids, 4 partition log, 5 live streams, 6 all streams
-- ARGV: 1 stream, 2 n, then per event: version, recorded_at (ms), packed event
local F = 3
local base = 3
local n = tonumber(ARGV[2])
local v, st = stream_head(KEYS[1])
if st == 'T' then return {'deleted'} end
local hits = 0
for i = 0, n - 1 do
  local b = base + i * F
  local ver = redis.call('HGET', KEYS[3], string.sub(ARGV[b + 2], 2, 17))
  if ver then
    ver = stored_version(ver)
    if ver ~= ARGV[b] then
      return {'mismatch', 'an imported event id is committed at version ' .. ver .. ', the import puts it at ' .. ARGV[b]}
    end
    hits = hits + 1
  end
end
if hits == n then return {'ok'} end
if hits > 0 then
  return {'mismatch', hits .. ' of ' .. n .. ' imported event ids are already committed'}
end
if ARGV[base] ~= dec_add(v, 1) then return {'conflict', state_str(v, st)} end
local first = ARGV[base]
local last = ARGV[base + (n - 1) * F]
local lid = redis.call('XADD', KEYS[4], '*', 's', ARGV[1], 'f', first, 't', last, 'e', '0-' .. first)
for i = 0, n - 1 do
  local b = base + i * F
  redis.call('XADD', KEYS[2], '0-' .. ARGV[b], 'd', ARGV[b + 2], 'c', lid .. ' ' .. i .. ' ' .. ARGV[b + 1])
  redis.call('HSET', KEYS[3], string.sub(ARGV[b + 2], 2, 17), ARGV[b])
end
redis.call('HSET', KEYS[1], 'v', last, 'st', 'L')
if st ~= 'L' then redis.call('ZADD', KEYS[5], 0, ARGV[1]) end
if not st then redis.call('ZADD', KEYS[6], 0, ARGV[1]) end
return {'ok'}
