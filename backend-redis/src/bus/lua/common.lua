-- Bus helpers (prepended after the crate's common.lua to every bus script).
-- Keys of one (topic, partition) share one hash tag: the stream, and per group the attempts
-- hash, the delayed-retry sorted set, the dead-letter stream, the owner lease and the parked
-- keys. Stream ids and counters stay strings where Lua doubles could round them.

-- The value of `name` in a flat [name, value, ...] reply (XINFO).
local function info_field(info, name)
  for i = 1, #info - 1, 2 do
    if info[i] == name then return info[i + 1] end
  end
  return nil
end

-- This group's row of XINFO GROUPS, or nil.
local function group_info(stream, group)
  if redis.call('EXISTS', stream) == 0 then return nil end
  for _, g in ipairs(redis.call('XINFO', 'GROUPS', stream)) do
    if info_field(g, 'name') == group then return g end
  end
  return nil
end

-- {version, entries ever added, entries the group has not acknowledged} of one partition.
-- The version grows with every script that changes the group's state on the partition, so
-- a reader keeps the newest answer whatever order the replies are processed in.
local function stats(stream, group, attempts, bump)
  local v
  if bump then
    v = redis.call('HINCRBY', attempts, '#v', 1)
  else
    v = tonumber(redis.call('HGET', attempts, '#v') or '0')
  end
  local g = group_info(stream, group)
  if not g then return {v, 0, 0} end
  local pending = info_field(g, 'pending') or 0
  local lag = info_field(g, 'lag')
  local read = info_field(g, 'entries-read')
  local added
  if lag and read then
    added = read + lag
  elseif lag then
    -- Nothing read yet (entries-read unknown) but the lag is known.
    added = info_field(redis.call('XINFO', 'STREAM', stream), 'entries-added') or 0
  else
    -- Redis cannot tell the lag (deleted entries after the group's position): count.
    local last = info_field(g, 'last-delivered-id')
    lag = #redis.call('XRANGE', stream, '(' .. last, '+', 'COUNT', 100000)
    added = info_field(redis.call('XINFO', 'STREAM', stream), 'entries-added') or 0
  end
  return {v, added, lag + pending}
end

-- An entry's attempt record in the attempts hash is 'count:first attempt ms' (one field,
-- so starting and acknowledging touch one field per entry). The count, '0' when none.
local function attempts_of(attempts, id)
  local v = redis.call('HGET', attempts, id)
  return v and string.match(v, '^(%d+)') or '0'
end

-- Forgets an entry's attempt record and retry schedule.
local function forget(attempts, retry, id)
  redis.call('HDEL', attempts, id)
  redis.call('ZREM', retry, id)
end

-- Dead-letters entry `id` with its acknowledgement, in this one script: the dead letter
-- holds the reason, its detail, the attempts, the original entry id, the group and the
-- original fields (prefixed `f.`). KEYS order of the callers: stream, lease, attempts,
-- retry, parked, dead.
local function dead_letter(k, group, id, fields, kind, detail, attempts)
  local args = {'XADD', k[6], '*', 'reason', kind, 'detail', detail, 'attempts', attempts,
    'oid', id, 'group', group}
  for i = 1, #fields - 1, 2 do
    args[#args + 1] = 'f.' .. fields[i]
    args[#args + 1] = fields[i + 1]
  end
  redis.call(unpack(args))
  redis.call('XACK', k[1], group, id)
  forget(k[3], k[4], id)
end

-- Calls f with the items of list as arguments, 1000 at a time (Lua's unpack is bounded by
-- its stack).
local function each_chunk(list, f)
  for s = 1, #list, 1000 do f(unpack(list, s, math.min(s + 999, #list))) end
end
