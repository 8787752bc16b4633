-- Helpers shared by every script (prepended to each one at compile time).
-- Versions, epochs and counters stay decimal strings: Lua numbers are doubles, exact only
-- to 2^53, and a version is any u64 up to i64::MAX.

-- a + n for a decimal string a without leading zeros and a small integer n >= 0.
local function dec_add(a, n)
  if #a <= 13 then
    -- Exact in a double, and tostring prints up to 14 significant digits.
    return string.format('%d', tonumber(a) + n)
  end
  local digits = {}
  local carry = n
  for i = #a, 1, -1 do
    local d = string.byte(a, i) - 48 + carry
    digits[i] = string.char(48 + d % 10)
    carry = math.floor(d / 10)
  end
  local out = table.concat(digits)
  while carry > 0 do
    out = string.char(48 + carry % 10) .. out
    carry = math.floor(carry / 10)
  end
  out = string.gsub(out, '^0+(%d)', '%1')
  return out
end

-- a - b for decimal strings without leading zeros, a >= b.
local function dec_sub(a, b)
  if #a <= 13 then
    return string.format('%d', tonumber(a) - tonumber(b))
  end
  local digits = {}
  local borrow = 0
  for i = 0, #a - 1 do
    local da = string.byte(a, #a - i) - 48
    local db = 0
    if i < #b then db = string.byte(b, #b - i) - 48 end
    local d = da - db - borrow
    if d < 0 then d = d + 10; borrow = 1 else borrow = 0 end
    digits[#a - i] = string.char(48 + d)
  end
  local out = string.gsub(table.concat(digits), '^0+(%d)', '%1')
  return out
end

-- a > b for decimal strings without leading zeros.
local function dec_gt(a, b)
  if #a ~= #b then return #a > #b end
  return a > b
end

local function dec_max(a, b)
  if dec_gt(a, b) then return a end
  return b
end

-- A number as the scripts write it: '0', or decimal digits without a leading zero, at most
-- the decimal `max`. The arithmetic above silently misreads anything else ('-5', '1.5',
-- '007').
local function is_decimal(x, max)
  if x == '0' then return true end
  if #x > #max or not string.find(x, '^[1-9]%d*$') then return false end
  return #x < #max or not dec_gt(x, max)
end

-- A version: at most i64::MAX.
local function is_version(x)
  return is_decimal(x, '9223372036854775807')
end

-- The answer of a script that finds a head field holding what no script writes: it stops
-- before its first write (a write that then failed half way would leave a commit pointer
-- without its events). At most 64 bytes of the value travel back.
local function damaged(field, value)
  return {'corrupt', field, string.sub(value, 1, 64)}
end

-- Adds the first event of a commit whose pointer `lid` was just added to the log `log`,
-- as entry `0-<first>` of `events` with the fields and values `...`, and returns its entry
-- id. Of a commit's writes only this one can fail: when the stream holds version `first`
-- already, that is when the head's `v` is behind its events (damage no field check sees),
-- or when `events` is not a stream. The pointer is then taken back, so the failed call
-- leaves nothing a reader can see (none saw the pointer: the script is atomic), and it
-- returns nil and the answer: `damaged` for `v`, or the server's error.
local function add_first(log, lid, events, first, v, ...)
  local id = redis.pcall('XADD', events, '0-' .. first, ...)
  if type(id) ~= 'table' then return id end
  redis.call('XDEL', log, lid)
  if redis.call('TYPE', events).ok == 'stream' then return nil, damaged('v', v) end
  return nil, id
end

-- The stream head: last version ('0' when never written), state flag (nil: missing,
-- 'L' live, 'S' soft-deleted, 'T' tombstoned), the first visible version (any u64:
-- truncate_before takes one), and the answer `damaged` gives for the first of them that is
-- not one of those (nil when all are).
local function stream_head(key)
  local h = redis.call('HMGET', key, 'v', 'st', 'vf')
  local v, st, vf = h[1] or '0', h[2] or nil, h[3] or '1'
  local bad
  if not is_version(v) then
    bad = damaged('v', v)
  elseif st and st ~= 'L' and st ~= 'S' and st ~= 'T' then
    bad = damaged('st', st)
  elseif not is_decimal(vf, '18446744073709551615') then
    bad = damaged('vf', vf)
  end
  return v, st, vf, bad
end

local function state_str(v, st)
  if st == 'T' then return 'T' end
  if not st then return 'M' end
  return st .. ':' .. v
end

-- ExpectedVersion::is_satisfied_by, with Exact(0) already normalised to 'none'.
local function expectation_holds(kind, n, v, st)
  if st == 'T' then return false end
  if kind == 'any' then return true end
  if kind == 'none' then return st ~= 'L' end
  if kind == 'exists' then return st == 'L' end
  return (st == 'L' or st == 'S') and v == n
end

-- Server time in milliseconds, as a decimal string.
local function now_ms()
  local t = redis.call('TIME')
  return t[1] .. string.format('%03d', math.floor(tonumber(t[2]) / 1000))
end


-- a > b for two 16-byte event ids, bytewise (Lua's `<` on strings follows the server's
-- collation locale, not byte order). False when either is not 16 bytes. Compared as four
-- big-endian 32-bit numbers (exact in Lua's doubles), read by one struct.unpack each: a
-- string.byte call per byte cost about 50,000 server instructions per single append,
-- more than the rest of the checks and three of its writes together.
local function bytes_gt(a, b)
  if not a or not b or #a ~= 16 or #b ~= 16 or a == b then return false end
  local a1, a2, a3, a4 = struct.unpack('>I4I4I4I4', a)
  local b1, b2, b3, b4 = struct.unpack('>I4I4I4I4', b)
  if a1 ~= b1 then return a1 > b1 end
  if a2 ~= b2 then return a2 > b2 end
  if a3 ~= b3 then return a3 > b3 end
  return a4 > b4
end

-- The version an ids-hash value names: appends store the entry id `0-<version>`, imports
-- (and appends before that form) the bare version.
local function stored_version(x)
  if string.byte(x, 1) == 48 and string.byte(x, 2) == 45 then return string.sub(x, 3) end
  return x
end

-- The id of the event at version `ver` (a number) of a stream's ordered prefix (see
-- append.lua). Such an event was appended, so its entry has one field whose value is the
-- packed event, id at bytes 2..17. Anything else is damage: the script stops before writing.
local function prefix_id(events, ver)
  local at = '0-' .. string.format('%d', ver)
  local e = redis.call('XRANGE', events, at, at)
  local f = e[1] and e[1][2]
  if not f or #f ~= 2 then
    error(redis.error_reply('the ordered prefix of ' .. events .. ' has no appended entry ' .. at))
  end
  return string.sub(f[2], 2, 17)
end

-- The version (a number) of the ordered prefix, between `lo` and `hi`, whose event has id
-- `x`, or nil. The prefix's ids ascend with the version: a binary search, one XRANGE per
-- step. `guess` is tried first: a re-sent batch sits at consecutive versions, so after its
-- first id each next one is found in one step.
local function prefix_find(events, x, lo, hi, guess)
  if guess and guess >= lo and guess <= hi then
    local id = prefix_id(events, guess)
    if id == x then return guess end
    if bytes_gt(x, id) then lo = guess + 1 else hi = guess - 1 end
  end
  while lo <= hi do
    local mid = math.floor((lo + hi) / 2)
    local id = prefix_id(events, mid)
    if id == x then return mid end
    if bytes_gt(x, id) then lo = mid + 1 else hi = mid - 1 end
  end
  return nil
end

-- The head as the append and import scripts read it, and the layout of the stream's event-id
-- index (see append.lua): 'g' ordered (every stream without events too), 'm' ids in the
-- head, 'x' the previous layout. Returns v ('0' when never written), st, the layout, the
-- greatest committed id where the layout keeps it (`g` or `m`; nil on 'x' and for a stream
-- without events), `b` (set once the ordered prefix has ended), and the prefix: its last
-- version `pe` (a decimal string, '0' when there is none) and its greatest id `px`; last,
-- the answer `damaged` gives for the first of these fields that holds what no script
-- writes (nil when none does). A few comparisons: this runs on every append.
local function id_layout(head)
  local h = redis.call('HMGET', head, 'v', 'st', 'g', 'b', 'bx', 'm')
  local v, st, g, b = h[1] or '0', h[2], h[3], h[4]
  local layout, pe, px = 'x', '0', nil
  if g or v == '0' then
    layout = 'g'
    if b then pe, px = b, h[5] else pe, px = v, g end
  elseif h[6] then
    layout = 'm'
  end
  local bad
  if not is_version(v) then
    bad = damaged('v', v)
  elseif st and st ~= 'L' and st ~= 'S' and st ~= 'T' then
    bad = damaged('st', st)
  elseif g and #g ~= 16 then
    bad = damaged('g', g)
  elseif h[6] and #h[6] ~= 16 then
    bad = damaged('m', h[6])
  elseif b and not is_version(b) then
    bad = damaged('b', b)
  elseif h[5] and #h[5] ~= 16 then
    bad = damaged('bx', h[5])
  end
  return v, st, layout, g or h[6], b, pe, px, bad
end
