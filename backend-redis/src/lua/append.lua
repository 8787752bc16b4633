-- Appends a batch to one stream: validates everything before the first write.
-- KEYS: 1 head, 2 events, 3 ids, 4 partition log, 5 live streams, 6 all streams
-- ARGV: 1 stream, 2 expectation (any|none|exists|exact), 3 exact version, 4 n,
--       then per event: the packed event (format byte, 16-byte id, …)
-- Each event is stored as entry `0-<version>` with fields d (the packed event) and
-- c ("<log entry id> <index in commit>").
local F = 1
local base = 5
local n = tonumber(ARGV[4])
local v, st = stream_head(KEYS[1])
if st == 'T' then return {'deleted'} end

-- Idempotency first, for every expectation (core decide_append).
-- One HMGET per 1000 ids (Lua's unpack has a stack limit).
local ids = {}
for i = 0, n - 1 do ids[i + 1] = string.sub(ARGV[base + i * F], 2, 17) end
local hits = 0
local found = {}
for from = 1, n, 1000 do
  local to = math.min(from + 999, n)
  local vers = redis.call('HMGET', KEYS[3], unpack(ids, from, to))
  for j = 1, #vers do
    if vers[j] then
      hits = hits + 1
      found[#found + 1] = vers[j]
    end
  end
end
if hits > 0 then
  if hits < n then
    return {'mismatch', hits .. ' of ' .. n .. ' event ids are already committed; the batch is neither new nor a re-send'}
  end
  for i = 2, #found do
    if dec_add(found[i - 1], 1) ~= found[i] then
      return {'mismatch', 'the event ids are committed, but not in this order'}
    end
  end
  local last = found[#found]
  local entry = redis.call('XRANGE', KEYS[2], '0-' .. last, '0-' .. last)
  local lid, lx = '', ''
  if entry[1] then
    local f = entry[1][2]
    for j = 1, #f, 2 do
      if f[j] == 'c' then lid, lx = string.match(f[j + 1], '^(%S+) (%S+)') end
    end
  end
  return {'dup', found[1], last, lid or '', lx or ''}
end

if not expectation_holds(ARGV[2], ARGV[3], v, st) then
  return {'conflict', state_str(v, st)}
end
if n == 0 then return {'empty', v} end

-- Everything is checked: write.
local first = dec_add(v, 1)
local last = dec_add(v, n)
if dec_gt(last, '9223372036854775807') then return {'toolarge', last} end
-- The log entry id's millisecond is the events' recorded_at (Redis keeps entry ids
-- increasing even if the clock goes back).
local lid = redis.call('XADD', KEYS[4], '*', 's', ARGV[1], 'f', first, 't', last, 'e', '0-' .. first)
local ver = v
local pairs_ = {}
for i = 0, n - 1 do
  ver = dec_add(ver, 1)
  redis.call('XADD', KEYS[2], '0-' .. ver, 'd', ARGV[base + i * F], 'c', lid .. ' ' .. i)
  pairs_[#pairs_ + 1] = ids[i + 1]
  pairs_[#pairs_ + 1] = ver
  if #pairs_ >= 1000 then
    redis.call('HSET', KEYS[3], unpack(pairs_))
    pairs_ = {}
  end
end
if #pairs_ > 0 then redis.call('HSET', KEYS[3], unpack(pairs_)) end
redis.call('HSET', KEYS[1], 'v', last, 'st', 'L')
if st ~= 'L' then redis.call('ZADD', KEYS[5], 0, ARGV[1]) end
if not st then redis.call('ZADD', KEYS[6], 0, ARGV[1]) end
return {'ok', first, last, lid, tostring(n - 1)}
