-- Appends a batch to one stream: validates everything before the first write.
-- KEYS: 1 head, 2 events, 3 ids of a stream of the previous layout (else the layout marker),
--       4 partition log, 5 live streams, 6 all streams
-- ARGV: 1 stream, 2 expectation (any|none|exists, or the exact version in decimal), then
--   * one event: 3 the packed event (its 16-byte id is bytes 2..17);
--   * a batch whose ids ascend (bytewise, strictly; the client checks): 3 'a', then the n
--     packed events (the script cuts an id out of its event only where it needs it);
--   * any other batch: 3 'i', 4 its smallest id, 5 its greatest (bytewise), then the n
--     16-byte ids, then the n packed events.
--   Every argument costs the server about 1,200 instructions before the script runs, so
--   ids travel apart from their events only for batches whose ids the script will write.
-- Each event is stored as entry `0-<version>` with ONE field: its name is the commit,
-- "<log entry id> <first version of the commit>" (the event's index in its commit is its
-- version minus that first version), its value the packed event. One field instead of two
-- (`d` + a commit value) makes a loaded entry 5 RESP elements instead of 7 (a 10,000-event
-- XRANGE parsed 25% faster) and saves about 36 bytes per event.
--
-- The event-id index (event id -> version, for idempotency), by layout, known from the head:
-- * ordered (`g` in the head, and every stream without events): `g` is the greatest id
--   committed. The stream's first events form its ordered prefix: their ids ascend with the
--   version, and they are in no index at all; a lookup is a binary search over the events
--   themselves (prefix_find). The prefix grows while every batch is fresh (its smallest id
--   above `g`) and ascending: time-ordered ids from one writer, the default, never write an
--   index entry (an HSET of 100 ids into a large hash cost a quarter of a batch's server
--   time). The first batch that is not ends the prefix for good: `b` records its last
--   version and `bx` its greatest id, and the ids of every later event are fields of the
--   head (16-byte names, which no head field has), value the entry id `0-<version>`.
-- * ids in head (`m` in the head; streams created by the release before the ordered
--   layout): as the ordered layout with an empty prefix, `m` for `g`. Kept as it is.
-- * previous (a head with neither; streams created before that): the ids in the hash
--   KEYS[3], and `mx`, valid while `mv` equals `v`. Kept as it is, written exactly as that
--   release's script wrote it.
-- A script of an older release running beside this one (rolling upgrade) keeps every
-- guarantee it had: on the streams of its own layout both write the same way; on an ordered
-- one it finds neither `m` nor `mx`, so it takes the stream for the previous layout, never
-- skips its lookup, and looks its ids up in KEYS[3], where Redis answers WRONGTYPE for the
-- marker: the old script fails before its first write instead of missing ids it cannot
-- see (their import scripts likewise).
local na = #ARGV
local n, lo, hi, ids_at, data_at
local asc = true
if na == 2 then
  n = 0
elseif na == 3 then
  n, data_at = 1, 3
  lo = string.sub(ARGV[3], 2, 17)
  hi = lo
elseif ARGV[3] == 'a' then
  n, data_at = na - 3, 4
  lo = string.sub(ARGV[4], 2, 17)
  hi = string.sub(ARGV[na], 2, 17)
elseif ARGV[3] == 'i' and na >= 7 and na % 2 == 1 then
  n = (na - 5) / 2
  lo, hi, ids_at, data_at, asc = ARGV[4], ARGV[5], 6, 6 + n, false
else
  return redis.error_reply('append: bad arguments (' .. na .. ')')
end

-- The id of the batch's event i (from 0).
local function id_of(i)
  if ids_at then return ARGV[ids_at + i] end
  return string.sub(ARGV[data_at + i], 2, 17)
end

-- `greatest`: `g` or `m`; the ordered prefix: versions 1..pe, px its greatest id (none: pe
-- is '0').
local v, st, layout, greatest, b, pe, px, bad = id_layout(KEYS[1])
if st == 'T' then return {'deleted'} end
if bad then return bad end
local idkey = KEYS[1]
-- `fresh`: no id of the batch can be committed already. The usual case with time-ordered ids
-- from one writer: the batch's smallest id is above every committed one. A stream without
-- events has no committed ids at all. Anything else looks every id up.
local fresh, mx, known
if layout == 'x' then
  idkey = KEYS[3]
  local l = redis.call('HMGET', KEYS[1], 'mx', 'mv')
  mx = l[1]
  if mx and #mx ~= 16 then return damaged('mx', mx) end
  known = mx and l[2] == v
  fresh = known and bytes_gt(lo, mx)
else
  fresh = v == '0' or bytes_gt(lo, greatest)
end

-- Idempotency first, for every expectation (core decide_append).
local hits = 0
local found
if not fresh and n > 0 then
  found = {}
  -- Versions after the prefix: in the index. One HMGET per 1000 ids (Lua's unpack has a
  -- stack limit).
  local indexed = {}
  if pe ~= v then
    for from = 0, n - 1, 1000 do
      local to = math.min(from + 999, n - 1)
      local vers
      if ids_at then
        vers = redis.call('HMGET', idkey, unpack(ARGV, ids_at + from, ids_at + to))
      else
        local t, nt = {}, 0
        for i = from, to do
          nt = nt + 1
          t[nt] = id_of(i)
        end
        vers = redis.call('HMGET', idkey, unpack(t, 1, nt))
      end
      for j = 1, to - from + 1 do
        if vers[j] then indexed[from + j] = stored_version(vers[j]) end
      end
    end
  end
  -- Versions in the prefix: searched, for ids not above its greatest.
  local top_v = tonumber(pe)
  local guess
  for i = 1, n do
    local ver = indexed[i]
    if not ver and px then
      local x = id_of(i - 1)
      if not bytes_gt(x, px) then
        local at = prefix_find(KEYS[2], x, 1, top_v, guess)
        if at then
          ver = string.format('%d', at)
          guess = at + 1
        end
      end
    end
    if ver then
      hits = hits + 1
      found[hits] = ver
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
-- The log entry id's millisecond is the events' recorded_at (Redis keeps entry ids
-- increasing even if the clock goes back).
local lid = redis.call('XADD', KEYS[4], '*', 's', ARGV[1], 'f', first, 't', last, 'e', '0-' .. first)
local k = lid .. ' ' .. first
-- The first event at once: the one write that can fail (see add_first).
local id1, behind = add_first(KEYS[4], lid, KEYS[2], first, v, k, ARGV[data_at])
if not id1 then return behind end
if v == '0' then
  -- The layout marker (see the top): a string where a script of the previous release
  -- expects its ids hash.
  redis.call('SET', KEYS[3], 'ids in head')
  -- Readers ask the head for `st` and `vf`; a field missing from a hash kept as a listpack
  -- is a scan of all its entries. So `vf` (1 when absent) is written at once, before the
  -- other head fields (HSETNX: a truncation may have set it already).
  redis.call('HSETNX', KEYS[1], 'vf', '1')
end
-- The greatest committed id after this batch (ordered and ids-in-head layouts: always kept;
-- previous: while `mx` is valid). Above the old one already when fresh: no comparison.
local top
if layout == 'x' then
  if known then
    top = mx
    if fresh or not top or bytes_gt(hi, top) then top = hi end
  end
else
  top = greatest
  if fresh or bytes_gt(hi, top) then top = hi end
end
-- The prefix grows by this batch: nothing is indexed.
local grows = layout == 'g' and not b and fresh and asc
if grows and n == 1 then
  -- The common call: no table, no unpack (their garbage is work for Lua's collector).
  if st == 'L' then
    redis.call('HSET', KEYS[1], 'v', last, 'g', top)
  else
    redis.call('HSET', KEYS[1], 'v', last, 'g', top, 'st', 'L')
  end
  if not st then
    redis.call('ZADD', KEYS[5], 0, ARGV[1])
    redis.call('ZADD', KEYS[6], 0, ARGV[1])
  elseif st ~= 'L' then
    redis.call('ZADD', KEYS[5], 0, ARGV[1])
  end
  return redis.status_reply('ok ' .. first .. ' ' .. first .. ' ' .. lid .. ' 0')
end
-- The head fields; `st` only when it changes.
local headf, nh = {'v', last}, 2
if layout == 'x' then
  headf[3], headf[4], nh = 'st', 'L', 4
  if known then headf[5], headf[6], headf[7], headf[8], nh = 'mx', top, 'mv', last, 8 end
else
  headf[3], headf[4], nh = (layout == 'g' and 'g') or 'm', top, 4
  if layout == 'g' and not b and not grows then
    -- The prefix ends before this batch.
    headf[5], headf[6], nh = 'b', v, 6
    if greatest then headf[7], headf[8], nh = 'bx', greatest, 8 end
  end
  if st ~= 'L' then headf[nh + 1], headf[nh + 2], nh = 'st', 'L', nh + 2 end
end
-- The first event has its id `0-<first>` (above); each next one `0-*`, which Redis 7.0
-- numbers as the stream's last sequence plus one, that is the next version: no version is
-- printed in Lua (a number to string per event was 13% of a batch's server time).
if grows then
  for i = 1, n - 1 do
    redis.call('XADD', KEYS[2], '0-*', k, ARGV[data_at + i])
  end
  redis.call('HSET', KEYS[1], unpack(headf, 1, nh))
else
  -- The index keeps the entry id XADD answers (`0-<version>`, the same allocation size as
  -- the bare version; stored_version reads both forms). `#t` is a search in Lua 5.1:
  -- count pairs by hand.
  local pairs_, np = {id_of(0), id1}, 2
  for i = 1, n - 1 do
    pairs_[np + 1] = id_of(i)
    pairs_[np + 2] = redis.call('XADD', KEYS[2], '0-*', k, ARGV[data_at + i])
    np = np + 2
    if np >= 1000 and i < n - 1 then
      redis.call('HSET', idkey, unpack(pairs_, 1, np))
      np = 0
    end
  end
  if layout == 'x' then
    redis.call('HSET', idkey, unpack(pairs_, 1, np))
    redis.call('HSET', KEYS[1], unpack(headf, 1, nh))
  else
    for j = 1, nh do pairs_[np + j] = headf[j] end
    redis.call('HSET', KEYS[1], unpack(pairs_, 1, np + nh))
  end
end
if st ~= 'L' then redis.call('ZADD', KEYS[5], 0, ARGV[1]) end
if not st then redis.call('ZADD', KEYS[6], 0, ARGV[1]) end
-- One status string, not an array: the reply of every append is parsed, and redis-rs parses
-- one element several times faster than five.
return redis.status_reply('ok ' .. first .. ' ' .. last .. ' ' .. lid .. ' ' .. tostring(n - 1))
