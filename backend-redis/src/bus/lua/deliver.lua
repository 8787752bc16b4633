-- Acknowledges handled entries and starts deliveries, many of each in one call: per
-- partition, checks the lease; acknowledges the handled entries as ack.lua does (XACK, their
-- attempt records and retry schedules forgotten); restarts the lease's ack timeout; then per
-- entry to start dead-letters it as parked when an earlier message of its key is in the dead
-- letter (acking and skipping it instead if it was deleted), else counts the attempt (our own
-- record: count and first attempt's time) and takes it off the retry schedule.
-- KEYS: per partition stream, lease, attempts, retry, parked, dead; ARGV: group, token,
-- ttl (ms), then per partition: a, '1' for stats or '0', f, n, a entry ids to acknowledge,
-- f fresh entry ids, their f message keys, then n pairs (entry id, message key) of the
-- others. Fresh entries were read new (XREADGROUP '>') by this owner and never started: they
-- have no attempt record and no retry scheduled, so their start is one field written,
-- without reading anything.
-- Returns per partition {'lost'} or {'ok', results, stats (empty when nothing was acked
-- here and none were asked for)}, results holding three items per entry, flat: 'gone', 0, 0
-- / 'parked', behind, 0 / 'ok', attempt, ms since the first attempt; for the others only
-- (the fresh ones all started as attempt 1) unless the partition has parked keys, then for
-- the fresh ones and the others, in that order.
local group, token, ttl = ARGV[1], ARGV[2], ARGV[3]
local out, a = {}, 4
local now = nil
for i = 1, #KEYS, 6 do
  local k = {KEYS[i], KEYS[i + 1], KEYS[i + 2], KEYS[i + 3], KEYS[i + 4], KEYS[i + 5]}
  local na, want = tonumber(ARGV[a]), ARGV[a + 1] == '1'
  local f, n = tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3])
  a = a + 4
  if redis.call('GET', k[2]) ~= token then
    out[#out + 1] = {'lost'}
    a = a + na + 2 * f + 2 * n
  else
    -- The ids go from ARGV to the commands by unpack, never through a Lua loop.
    if na > 0 then
      local retry = redis.call('EXISTS', k[4]) == 1
      for c = a, a + na - 1, 1000 do
        local e = math.min(c + 999, a + na - 1)
        redis.call('XACK', k[1], group, unpack(ARGV, c, e))
        redis.call('HDEL', k[3], unpack(ARGV, c, e))
        if retry then redis.call('ZREM', k[4], unpack(ARGV, c, e)) end
      end
      a = a + na
    end
    redis.call('PEXPIRE', k[2], ttl)
    now = now or now_ms()
    -- Most partitions have no parked key: then the fresh entries take the fast path.
    local parked = redis.call('EXISTS', k[5]) == 1
    local list = {}
    if parked then
      for x = 0, f - 1 do
        list[#list + 1] = ARGV[a + x]
        list[#list + 1] = ARGV[a + f + x]
      end
    elseif f > 0 then
      local rec = '1:' .. now
      local set = {}
      for x = 0, f - 1 do
        set[2 * x + 1] = ARGV[a + x]
        set[2 * x + 2] = rec
      end
      each_chunk(set, function(...) redis.call('HSET', k[3], ...) end)
    end
    a = a + 2 * f
    for x = 0, 2 * n - 1 do list[#list + 1] = ARGV[a + x] end
    a = a + 2 * n
    local m = #list / 2
    local retry = m > 0 and redis.call('EXISTS', k[4]) == 1
    local res, starts, ids = {}, {}, {}
    local changed = false
    for j = 1, m do
      local id, key = list[2 * j - 1], list[2 * j]
      -- The consumer holds the entry's fields already (read, or claimed, moments ago); the
      -- stream is looked at again only to dead-letter a parked one (it copies the fields),
      -- and a pending entry is never trimmed, so that lookup only misses after an XDEL.
      local behind = parked and redis.call('HGET', k[5], key)
      local e = behind and redis.call('XRANGE', k[1], id, id)
      if e and #e == 0 then
        redis.call('XACK', k[1], group, id)
        forget(k[3], k[4], id)
        res[3 * j - 2], res[3 * j - 1], res[3 * j] = 'gone', 0, 0
        changed = true
      elseif behind then
        dead_letter(k, group, id, e[1][2], 'parked', behind, attempts_of(k[3], id))
        res[3 * j - 2], res[3 * j - 1], res[3 * j] = 'parked', behind, 0
        changed = true
      else
        starts[#starts + 1] = j
        ids[j] = id
      end
    end
    -- The attempt records of the started entries: one read and one write for all.
    if #starts > 0 then
      local fields = {}
      for x, j in ipairs(starts) do fields[x] = ids[j] end
      local old = {}
      each_chunk(fields, function(...)
        for _, v in ipairs(redis.call('HMGET', k[3], ...)) do old[#old + 1] = v end
      end)
      local set, started = {}, {}
      local now_n = tonumber(now)
      for x, j in ipairs(starts) do
        local c, first = 1, now
        if old[x] then
          local n, f = string.match(old[x], '^(%d+):?(%d*)$')
          c = tonumber(n or '0') + 1
          if f and f ~= '' then first = f end
        end
        set[#set + 1] = ids[j]
        set[#set + 1] = c .. ':' .. first
        started[#started + 1] = ids[j]
        res[3 * j - 2], res[3 * j - 1], res[3 * j] = 'ok', c, now_n - tonumber(first)
      end
      each_chunk(set, function(...) redis.call('HSET', k[3], ...) end)
      if retry then each_chunk(started, function(...) redis.call('ZREM', k[4], ...) end) end
    end
    -- Starting changes neither the entries added nor the unacknowledged ones: stats only
    -- when an entry was acked here and the consumer asked for them, or one was dead-lettered
    -- or dropped here.
    local st = {}
    if changed or (want and na > 0) then
      st = stats(k[1], group, k[3], true)
    elseif na > 0 then
      -- The version still moves: a stats answer computed before this ack is older.
      redis.call('HINCRBY', k[3], '#v', 1)
    end
    out[#out + 1] = {'ok', res, st}
  end
end
return out
