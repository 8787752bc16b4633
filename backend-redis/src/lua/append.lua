-- Appends a batch to one stream: validates everything before the first write.
-- KEYS: 1 head, 2 events, 3 ids, 4 partition log, 5 live streams, 6 all streams
-- ARGV: 1 stream, 2 expectation (any|none|exists|exact), 3 exact version, 4 n,
--       5 the batch's smallest event id, 6 its greatest (16 bytes each, bytewise order),
--       then the n 16-byte event ids, then the n packed events (format byte, 16-byte id, …)
-- Each event is stored as entry `0-<version>` with ONE field: its name is the commit,
-- "<log entry id> <first version of the commit>" (the event's index in its commit is its
-- version minus that first version), its value the packed event. One field instead of two
-- (`d` + a commit value) makes a loaded entry 5 RESP elements instead of 7 (a 10,000-event
-- XRANGE parsed 25% faster) and saves about 36 bytes per event. The ids come apart from the
-- packed events so no string is cut per event: in a batch of 100 the garbage strings (and
-- Lua's collector after them) cost more than the XADDs.
local n = tonumber(ARGV[4])
local ids_at = 7
local data_at = 7 + n
local h = redis.call('HMGET', KEYS[1], 'v', 'st', 'mx', 'mv')
local v, st, mx, mv = h[1] or '0', h[2] or nil, h[3], h[4]
if st == 'T' then return {'deleted'} end

-- The head keeps `mx`, the greatest event id committed to the stream, valid while `mv`
-- equals the stream's version (an import, or an append by an older script, moves the
-- version without it). No committed id can be above it, so a batch whose smallest id is
-- (the usual case with time-ordered ids from one writer) cannot hold a committed one, and
-- the per-id lookup below is skipped: it was a tenth of a batch's server time. A stream
-- without events has no committed ids at all. Anything else looks every id up.
local known = v == '0' or (mx and mv == v)
-- `above`: the batch's smallest id is above every committed one.
local above = known and mx and bytes_gt(ARGV[5], mx)
local fresh = v == '0' or above

-- Idempotency first, for every expectation (core decide_append).
-- One HMGET per 1000 ids (Lua's unpack has a stack limit).
local hits = 0
local found = {}
if not fresh then
  for from = 0, n - 1, 1000 do
    local to = math.min(from + 999, n - 1)
    local vers = redis.call('HMGET', KEYS[3], unpack(ARGV, ids_at + from, ids_at + to))
    for j = 1, #vers do
      if vers[j] then
        hits = hits + 1
        found[#found + 1] = stored_version(vers[j])
      end
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
-- The first event gets its id `0-<first>`; each next one `0-*`, which Redis 7.0 numbers as
-- the stream's last sequence plus one, that is the next version: no version is printed in
-- Lua (a number to string per event was 13% of a batch's server time). The ids hash keeps
-- the entry id XADD answers (`0-<version>`, the same allocation size as the bare version;
-- stored_version reads both forms).
-- `#t` is a search in Lua 5.1: count pairs by hand.
local pairs_, np = {}, 0
local at = '0-' .. first
for i = 0, n - 1 do
  pairs_[np + 1] = ARGV[ids_at + i]
  pairs_[np + 2] = redis.call('XADD', KEYS[2], at, k, ARGV[data_at + i])
  at = '0-*'
  np = np + 2
  if np >= 1000 then
    redis.call('HSET', KEYS[3], unpack(pairs_, 1, np))
    np = 0
  end
end
if np > 0 then redis.call('HSET', KEYS[3], unpack(pairs_, 1, np)) end
if known then
  local top = mx
  -- Above mx already: the greatest id is too, no second comparison.
  if above or not top or bytes_gt(ARGV[6], top) then top = ARGV[6] end
  redis.call('HSET', KEYS[1], 'v', last, 'st', 'L', 'mx', top, 'mv', last)
else
  redis.call('HSET', KEYS[1], 'v', last, 'st', 'L')
end
if st ~= 'L' then redis.call('ZADD', KEYS[5], 0, ARGV[1]) end
if not st then redis.call('ZADD', KEYS[6], 0, ARGV[1]) end
-- One status string, not an array: the reply of every append is parsed, and redis-rs parses
-- one element several times faster than five.
return redis.status_reply('ok ' .. first .. ' ' .. last .. ' ' .. lid .. ' ' .. tostring(n - 1))
