-- Starts deliveries, many in one call: per partition, checks the lease (and restarts its ack
-- timeout), then per entry acks and skips one that was trimmed or deleted, dead-letters it as
-- parked when an earlier message of its key is in the dead letter, else counts the attempt
-- (our own counter, with the first attempt's time) and takes it off the retry schedule.
-- KEYS: per partition stream, lease, attempts, retry, parked, dead; ARGV: group, token,
-- ttl (ms), then per partition a count n and n pairs (entry id, message key).
-- Returns per partition {'lost'} or {'ok', results, stats}, a result per entry being
-- {'gone'}, {'parked', behind} or {'ok', attempt, ms since the first attempt}.
local group, token, ttl = ARGV[1], ARGV[2], ARGV[3]
local out, a = {}, 4
local now = nil
for i = 1, #KEYS, 6 do
  local k = {KEYS[i], KEYS[i + 1], KEYS[i + 2], KEYS[i + 3], KEYS[i + 4], KEYS[i + 5]}
  local n = tonumber(ARGV[a])
  a = a + 1
  if redis.call('GET', k[2]) ~= token then
    out[#out + 1] = {'lost'}
    a = a + 2 * n
  else
    redis.call('PEXPIRE', k[2], ttl)
    -- Most partitions have no parked key and no retry scheduled: skip those lookups.
    local parked = redis.call('EXISTS', k[5]) == 1
    local retry = redis.call('EXISTS', k[4]) == 1
    local res = {}
    for j = 1, n do
      local id, key = ARGV[a], ARGV[a + 1]
      a = a + 2
      local e = redis.call('XRANGE', k[1], id, id)
      local behind = parked and #e > 0 and redis.call('HGET', k[5], key)
      if #e == 0 then
        redis.call('XACK', k[1], group, id)
        forget(k[3], k[4], id)
        res[j] = {'gone'}
      elseif behind then
        local c = redis.call('HGET', k[3], id) or '0'
        dead_letter(k, group, id, e[1][2], 'parked', behind, c)
        res[j] = {'parked', behind}
      else
        now = now or now_ms()
        local c = redis.call('HINCRBY', k[3], id, 1)
        local first = nil
        if c > 1 then first = redis.call('HGET', k[3], 'f:' .. id) end
        if not first then
          redis.call('HSET', k[3], 'f:' .. id, now)
          first = now
        end
        if retry then redis.call('ZREM', k[4], id) end
        res[j] = {'ok', c, tonumber(now) - tonumber(first)}
      end
    end
    out[#out + 1] = {'ok', res, stats(k[1], group, k[3], true)}
  end
end
return out
