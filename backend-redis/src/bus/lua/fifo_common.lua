-- Shared by every FIFO queue script (prepended at compile time).
-- KEYS (one hash tag per queue, so one slot): 1 the list of entry ids in FIFO order,
-- 2 hash id -> payload, 3 hash id -> '<ticket>:<deadline ms>', 4 the ticket counter (INCR),
-- 5 the sweep state hash: 'mono' ('0' once deadlines stopped being non-decreasing along the
-- list), 'last' (largest deadline queued), 'min' (smallest deadline, kept while mono is '0').
-- ARGV[1]: now, integer milliseconds. Deadlines are integer milliseconds, exact in a Lua
-- double (below 2^53); no sorted set, so no float score anywhere.
local LIST, DATA, INFO, SEQ, STATE = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local NOW = tonumber(ARGV[1])

-- The ticket and deadline (string and number) of an entry's info, or nil.
local function parse_info(v)
  if not v then return nil end
  local ticket, dl = string.match(v, '^(%d+):(%d+)$')
  if not ticket then return nil end
  return ticket, dl, tonumber(dl)
end

local function forget(id)
  redis.call('HDEL', DATA, id)
  redis.call('HDEL', INFO, id)
end

-- Removes every expired entry (and any entry without valid info); returns how many.
-- While deadlines are non-decreasing along the list (one TTL for the queue: the usual case)
-- the expired entries are the list's head, so this costs O(expired). Otherwise a full pass
-- runs, only once the smallest deadline has passed, and finds out whether order and
-- deadlines agree again.
local function sweep()
  local removed = 0
  if redis.call('HGET', STATE, 'mono') ~= '0' then
    while true do
      local head = redis.call('LINDEX', LIST, 0)
      if not head then break end
      local _, _, dl = parse_info(redis.call('HGET', INFO, head))
      if dl and dl > NOW then break end
      redis.call('LPOP', LIST)
      forget(head)
      removed = removed + 1
    end
    return removed
  end
  local min = tonumber(redis.call('HGET', STATE, 'min') or '0')
  if min and min > NOW then return 0 end
  local ids = redis.call('LRANGE', LIST, 0, -1)
  local keep, mono, prev, last_s, low, low_s = {}, true, nil, nil, nil, nil
  for _, id in ipairs(ids) do
    local _, dl_s, dl = parse_info(redis.call('HGET', INFO, id))
    if dl and dl > NOW then
      keep[#keep + 1] = id
      if prev and dl < prev then mono = false end
      if not prev or dl > prev then prev, last_s = dl, dl_s end
      if not low or dl < low then low, low_s = dl, dl_s end
    else
      forget(id)
      removed = removed + 1
    end
  end
  if removed > 0 then
    redis.call('DEL', LIST)
    for i = 1, #keep, 1000 do
      redis.call('RPUSH', LIST, unpack(keep, i, math.min(i + 999, #keep)))
    end
  end
  if mono then
    redis.call('DEL', STATE)
    if last_s then redis.call('HSET', STATE, 'last', last_s) end
  else
    redis.call('HSET', STATE, 'min', low_s)
  end
  return removed
end

-- 1-based position of a queued id.
local function position_of(id)
  local index = redis.call('LPOS', LIST, id)
  if not index then return nil end
  return index + 1
end
