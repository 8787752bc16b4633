-- Imports a commit with explicit versions, ids and timestamps (Admin::import_commit).
-- KEYS: 1 head, 2 events, 3 ids (previous layout) or layout marker, 4 partition log, 5 live streams, 6 all streams
-- ARGV: 1 stream, 2 n, then per event: version, recorded_at (ms), packed event
local F = 3
local base = 3
local n = tonumber(ARGV[2])
-- The ids go where the stream's layout keeps them (see append.lua): the head hash (and its
-- `m`, the greatest id, kept exact), or for a stream of the previous layout (a head without
-- `m`) the hash KEYS[3].
local h = redis.call('HMGET', KEYS[1], 'v', 'st', 'm')
local v, st, m = h[1] or '0', h[2] or nil, h[3]
if st == 'T' then return {'deleted'} end
local legacy = not m and v ~= '0'
local idkey = KEYS[1]
if legacy then idkey = KEYS[3] end
local hits = 0
for i = 0, n - 1 do
  local b = base + i * F
  local ver = redis.call('HGET', idkey, string.sub(ARGV[b + 2], 2, 17))
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
-- A new stream: the layout marker, and `vf` written at once (readers ask for it; see
-- append.lua).
if v == '0' then
  redis.call('SET', KEYS[3], 'ids in head')
  redis.call('HSETNX', KEYS[1], 'vf', '1')
end
local lid = redis.call('XADD', KEYS[4], '*', 's', ARGV[1], 'f', first, 't', last, 'e', '0-' .. first)
local top = m
for i = 0, n - 1 do
  local b = base + i * F
  local id = string.sub(ARGV[b + 2], 2, 17)
  redis.call('XADD', KEYS[2], '0-' .. ARGV[b], 'd', ARGV[b + 2], 'c', lid .. ' ' .. i .. ' ' .. ARGV[b + 1])
  redis.call('HSET', idkey, id, ARGV[b])
  if not legacy and (not top or bytes_gt(id, top)) then top = id end
end
if legacy then
  redis.call('HSET', KEYS[1], 'v', last, 'st', 'L')
else
  redis.call('HSET', KEYS[1], 'v', last, 'st', 'L', 'm', top)
end
if st ~= 'L' then redis.call('ZADD', KEYS[5], 0, ARGV[1]) end
if not st then redis.call('ZADD', KEYS[6], 0, ARGV[1]) end
return {'ok'}
