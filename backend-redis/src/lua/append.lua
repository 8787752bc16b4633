-- Appends a batch to one stream: validates everything before the first write.
-- KEYS: 1 head, 2 events, 3 ids of a stream of the previous layout (else the layout marker),
--       4 partition log, 5 live streams, 6 all streams
-- ARGV: 1 stream, 2 expectation (any|none|exists, or the exact version in decimal), then
--       one event: 3 the packed event (its 16-byte id is bytes 2..17);
--       n >= 2 events: 3 the batch's smallest event id, 4 its greatest (bytewise order),
--       then the n 16-byte event ids, then the n packed events (format byte, 16-byte id, …).
--       Every argument costs the server about 1,200 instructions before the script runs:
--       a single event sends 3 instead of 8 (its id is cut from the packed event, and the
--       count is the number of arguments).
-- Each event is stored as entry `0-<version>` with ONE field: its name is the commit,
-- "<log entry id> <first version of the commit>" (the event's index in its commit is its
-- version minus that first version), its value the packed event. One field instead of two
-- (`d` + a commit value) makes a loaded entry 5 RESP elements instead of 7 (a 10,000-event
-- XRANGE parsed 25% faster) and saves about 36 bytes per event. In a batch the ids come
-- apart from the packed events so no string is cut per event: in a batch of 100 the
-- garbage strings (and Lua's collector after them) cost more than the XADDs.
--
-- Two layouts of the event-id index (event id -> `0-<version>`, for idempotency):
-- * current: the ids are fields of the head hash itself (16-byte names, which no head field
--   has), and the head's `m` is the greatest id committed, kept exact by every script that
--   writes such a stream (append, import). The head update and the id insert are then one
--   HSET. KEYS[3] holds a plain string (the marker), set when the stream is created.
-- * previous (streams created before this layout; recognised by a head without `m`): the ids
--   in the hash KEYS[3], and `mx`, valid while `mv` equals `v`. Such a stream keeps that
--   layout for good, written exactly as the previous script wrote it.
-- So each stream's ids are in exactly one place, known from its head. A script of the
-- previous release running beside this one (rolling upgrade) keeps every guarantee it had:
-- on a stream of the previous layout both write the same way; on a current one it finds no
-- `mx`/`mv`, so it never takes its skip and looks its ids up in KEYS[3], where Redis answers
-- WRONGTYPE for the marker: the old script fails before its first write instead of missing
-- ids it cannot see (its import script likewise).
local na = #ARGV
local n, lo, hi, ids_at, data_at
if na == 3 then
  n, data_at = 1, 3
  lo = string.sub(ARGV[3], 2, 17)
  hi = lo
elseif na == 2 then
  n = 0
elseif na >= 6 and na % 2 == 0 then
  n = (na - 4) / 2
  lo, hi, ids_at, data_at = ARGV[3], ARGV[4], 5, 5 + n
else
  return redis.error_reply('append: bad argument count ' .. na)
end

local h = redis.call('HMGET', KEYS[1], 'v', 'st', 'm')
local v, st, m = h[1] or '0', h[2] or nil, h[3]
if st == 'T' then return {'deleted'} end
-- A stream without events gets the current layout.
local legacy = not m and v ~= '0'
local idkey = KEYS[1]
local mx, known
-- `fresh`: no id of the batch can be committed already. The usual case with time-ordered ids
-- from one writer: the batch's smallest id is above every committed one. A stream without
-- events has no committed ids at all. Anything else looks every id up.
local fresh
if legacy then
  idkey = KEYS[3]
  local l = redis.call('HMGET', KEYS[1], 'mx', 'mv')
  mx = l[1]
  known = mx and l[2] == v
  fresh = known and bytes_gt(lo, mx)
else
  fresh = v == '0' or bytes_gt(lo, m)
end

-- Idempotency first, for every expectation (core decide_append).
-- One HMGET per 1000 ids (Lua's unpack has a stack limit).
local hits = 0
local found
if not fresh and n > 0 then
  found = {}
  for from = 0, n - 1, 1000 do
    local vers
    if n == 1 then
      vers = redis.call('HMGET', idkey, lo)
    else
      local to = math.min(from + 999, n - 1)
      vers = redis.call('HMGET', idkey, unpack(ARGV, ids_at + from, ids_at + to))
    end
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

-- The expectation is one argument: 'any', 'none', 'exists' or the exact version, which
-- expectation_holds compares with `v` when the kind is none of the three words.
if not expectation_holds(ARGV[2], ARGV[2], v, st) then
  return {'conflict', state_str(v, st)}
end
if n == 0 then return {'empty', v} end

-- Everything is checked: write.
local first = dec_add(v, 1)
local last = first
if n > 1 then last = dec_add(v, n) end
if dec_gt(last, '9223372036854775807') then return {'toolarge', last} end
if v == '0' then
  -- The layout marker (see the top): a string where a script of the previous release
  -- expects its ids hash.
  redis.call('SET', KEYS[3], 'ids in head')
  -- Readers ask the head for `st` and `vf`; a field missing from a hash kept as a listpack
  -- is a scan of all its entries, which here are the stream's ids. So `vf` (1 when absent)
  -- is written at once, near the front (HSETNX: a truncation may have set it already).
  redis.call('HSETNX', KEYS[1], 'vf', '1')
end
-- The log entry id's millisecond is the events' recorded_at (Redis keeps entry ids
-- increasing even if the clock goes back).
local lid = redis.call('XADD', KEYS[4], '*', 's', ARGV[1], 'f', first, 't', last, 'e', '0-' .. first)
local k = lid .. ' ' .. first
-- The greatest committed id after this batch (current layout: always kept; previous: while
-- `mx` is valid). Above the old one already when fresh: no second comparison.
local top
if legacy then
  if known then
    top = mx
    if fresh or not top or bytes_gt(hi, top) then top = hi end
  end
else
  top = m
  if fresh or bytes_gt(hi, top) then top = hi end
end
if n == 1 and not legacy then
  -- The common call: no table, no unpack (their garbage is work for Lua's collector).
  local e = redis.call('XADD', KEYS[2], '0-' .. first, k, ARGV[data_at])
  if st == 'L' then
    redis.call('HSET', KEYS[1], 'v', last, 'm', top, lo, e)
  else
    redis.call('HSET', KEYS[1], 'v', last, 'm', top, 'st', 'L', lo, e)
  end
  if not st then
    redis.call('ZADD', KEYS[5], 0, ARGV[1])
    redis.call('ZADD', KEYS[6], 0, ARGV[1])
  elseif st ~= 'L' then
    redis.call('ZADD', KEYS[5], 0, ARGV[1])
  end
  return redis.status_reply('ok ' .. first .. ' ' .. first .. ' ' .. lid .. ' 0')
end
-- The head fields written with the last ids; `st` only when it changes.
local headf = {'v', last}
if legacy then
  headf[3], headf[4] = 'st', 'L'
  if known then headf[5], headf[6], headf[7], headf[8] = 'mx', top, 'mv', last end
else
  headf[3], headf[4] = 'm', top
  if st ~= 'L' then headf[5], headf[6] = 'st', 'L' end
end
if n == 1 then
  local e = redis.call('XADD', KEYS[2], '0-' .. first, k, ARGV[data_at])
  redis.call('HSET', idkey, lo, e)
  redis.call('HSET', KEYS[1], unpack(headf))
else
  -- The first event gets its id `0-<first>`; each next one `0-*`, which Redis 7.0 numbers
  -- as the stream's last sequence plus one, that is the next version: no version is printed
  -- in Lua (a number to string per event was 13% of a batch's server time). The ids keep
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
    if np >= 1000 and i < n - 1 then
      redis.call('HSET', idkey, unpack(pairs_, 1, np))
      np = 0
    end
  end
  if legacy then
    redis.call('HSET', idkey, unpack(pairs_, 1, np))
    redis.call('HSET', KEYS[1], unpack(headf))
  else
    for j = 1, #headf do pairs_[np + j] = headf[j] end
    redis.call('HSET', KEYS[1], unpack(pairs_, 1, np + #headf))
  end
end
if st ~= 'L' then redis.call('ZADD', KEYS[5], 0, ARGV[1]) end
if not st then redis.call('ZADD', KEYS[6], 0, ARGV[1]) end
-- One status string, not an array: the reply of every append is parsed, and redis-rs parses
-- one element several times faster than five.
return redis.status_reply('ok ' .. first .. ' ' .. last .. ' ' .. lid .. ' ' .. tostring(n - 1))
