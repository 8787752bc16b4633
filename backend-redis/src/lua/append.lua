-- Appends a batch to one stream: validates everything before the first write.
-- KEYS: 1 head, 2 events, 3 ids, 4 partition log, 5 live streams, 6 all streams
-- ARGV: 1 stream, 2 expectation (any|none|exists|exact), 3 exact version, 4 n,
--       then the n 16-byte event ids, then the n packed events (format byte, 16-byte id, …)
-- Each event is stored as entry `0-<version>` with ONE field: its name is the commit,
-- "<log entry id> <first version of the commit>" (the event's index in its commit is its
-- version minus that first version), its value the packed event. One field instead of two
-- (`d` + a commit value) makes a loaded entry 5 RESP elements instead of 7 (a 10,000-event
-- XRANGE parsed 25% faster) and saves about 36 bytes per event. The ids come apart from the
-- packed events so no string is cut per event: in a batch of 100 the garbage strings (and
-- Lua's collector after them) cost more than the XADDs.
local n = tonumber(ARGV[4])
local ids_at = 5
local data_at = 5 + n
local v, st = stream_head(KEYS[1])
if st == 'T' then return {'deleted'} end

-- Idempotency first, for every expectation (core decide_append).
-- One HMGET per 1000 ids (Lua's unpack has a stack limit).
local hits = 0
local found = {}
for from = 0, n - 1, 1000 do
  local to = math.min(from + 999, n - 1)
  local vers = redis.call('HMGET', KEYS[3], unpack(ARGV, ids_at + from, ids_at + to))
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
    if #f == 2 and f[1] ~= 'd' then
      -- The appended form: the field name is "<log entry id> <first version>".
      local first
      lid, first = string.match(f[1], '^(%S+) (%S+)$')
      if lid and first then lx = dec_sub(last, first) end
    else
      -- The imported form: field c is "<log entry id> <index> <recorded ms>".
      for j = 1, #f, 2 do
        if f[j] == 'c' then lid, lx = string.match(f[j + 1], '^(%S+) (%S+)') end
      end
    end
  end
  -- The same status form as a fresh append (see the end); an unknown position is '-'.
  return redis.status_reply('dup ' .. found[1] .. ' ' .. last .. ' ' .. ((lid ~= '' and lid) or '-') .. ' ' .. ((lx ~= '' and lx) or '-'))
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
local k = lid .. ' ' .. first
-- `#t` is a search in Lua 5.1: count pairs by hand.
local pairs_, np = {}, 0
-- Below 10^13 a version is an exact double that `..` prints as an integer: count in numbers
-- there (a decimal-string addition per event was a tenth of the script); beyond, in strings.
local small = #last <= 13
local nv = small and tonumber(v)
local ver = v
for i = 0, n - 1 do
  if small then
    nv = nv + 1
    ver = tostring(nv)
  else
    ver = dec_add(ver, 1)
  end
  redis.call('XADD', KEYS[2], '0-' .. ver, k, ARGV[data_at + i])
  pairs_[np + 1] = ARGV[ids_at + i]
  pairs_[np + 2] = ver
  np = np + 2
  if np >= 1000 then
    redis.call('HSET', KEYS[3], unpack(pairs_, 1, np))
    np = 0
  end
end
if np > 0 then redis.call('HSET', KEYS[3], unpack(pairs_, 1, np)) end
redis.call('HSET', KEYS[1], 'v', last, 'st', 'L')
if st ~= 'L' then redis.call('ZADD', KEYS[5], 0, ARGV[1]) end
if not st then redis.call('ZADD', KEYS[6], 0, ARGV[1]) end
-- One status string, not an array: the reply of every append is parsed, and redis-rs parses
-- one element several times faster than five.
return redis.status_reply('ok ' .. first .. ' ' .. last .. ' ' .. lid .. ' ' .. tostring(n - 1))
