-- Imports a commit with explicit versions, ids and timestamps (Admin::import_commit).
-- KEYS: 1 head, 2 events, 3 ids (previous layout) or layout marker, 4 partition log, 5 live streams, 6 all streams
-- ARGV: 1 stream, 2 n, then per event: version, recorded_at (ms), packed event
local F = 3
local base = 3
local n = tonumber(ARGV[2])
-- The ids go where the stream's layout keeps them (see append.lua): the head hash, after
-- the ordered prefix, which an import ends (imported ids need not ascend); for a stream of
-- the previous layout (a head with neither `g` nor `m`) the hash KEYS[3]. The greatest id
-- (`g`, or `m` on a stream of that layout) is kept exact.
local v, st, layout, greatest, b, pe, px, bad = id_layout(KEYS[1])
if st == 'T' then return {'deleted'} end
if bad then return bad end
local idkey = KEYS[1]
if layout == 'x' then idkey = KEYS[3] end
local hits = 0
for i = 0, n - 1 do
  local bi = base + i * F
  local id = string.sub(ARGV[bi + 2], 2, 17)
  local ver = redis.call('HGET', idkey, id)
  if ver then
    ver = stored_version(ver)
  elseif px and not bytes_gt(id, px) then
    local at = prefix_find(KEYS[2], id, 1, tonumber(pe), nil)
    if at then ver = string.format('%d', at) end
  end
  if ver then
    if ver ~= ARGV[bi] then
      return {'mismatch', 'an imported event id is committed at version ' .. ver .. ', the import puts it at ' .. ARGV[bi]}
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
-- The first event at once: the one write that can fail (see add_first).
local entry = function(i)
  local bi = base + i * F
  return 'd', ARGV[bi + 2], 'c', lid .. ' ' .. i .. ' ' .. ARGV[bi + 1]
end
local id1, behind = add_first(KEYS[4], lid, KEYS[2], first, v, entry(0))
if not id1 then return behind end
-- A new stream: the layout marker, and `vf` written at once (readers ask for it; see
-- append.lua).
if v == '0' then
  redis.call('SET', KEYS[3], 'ids in head')
  redis.call('HSETNX', KEYS[1], 'vf', '1')
end
local top = greatest
for i = 0, n - 1 do
  local bi = base + i * F
  local id = string.sub(ARGV[bi + 2], 2, 17)
  if i > 0 then redis.call('XADD', KEYS[2], '0-' .. ARGV[bi], entry(i)) end
  redis.call('HSET', idkey, id, ARGV[bi])
  if layout ~= 'x' and (not top or bytes_gt(id, top)) then top = id end
end
if layout == 'x' then
  redis.call('HSET', KEYS[1], 'v', last, 'st', 'L')
elseif layout == 'm' then
  redis.call('HSET', KEYS[1], 'v', last, 'st', 'L', 'm', top)
elseif b then
  redis.call('HSET', KEYS[1], 'v', last, 'st', 'L', 'g', top)
elseif greatest then
  -- The prefix ends before the imported events.
  redis.call('HSET', KEYS[1], 'v', last, 'st', 'L', 'g', top, 'b', v, 'bx', greatest)
else
  redis.call('HSET', KEYS[1], 'v', last, 'st', 'L', 'g', top, 'b', v)
end
if st ~= 'L' then redis.call('ZADD', KEYS[5], 0, ARGV[1]) end
if not st then redis.call('ZADD', KEYS[6], 0, ARGV[1]) end
return {'ok'}
