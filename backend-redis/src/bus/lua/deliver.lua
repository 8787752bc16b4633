-- Starts a delivery: checks the lease (and restarts its ack timeout), acks and skips an
-- entry that was trimmed or deleted, dead-letters it as parked when an earlier message of
-- its key is in the dead letter, else counts the attempt (our own counter) and takes it
-- off the retry schedule.
-- KEYS: stream, lease, attempts, retry, parked, dead; ARGV: group, id, token, ttl (ms), key.
-- Returns {'lost'}, {'gone', stats}, {'parked', behind, stats} or
-- {'ok', attempt, ms since the first attempt, stats}.
if redis.call('GET', KEYS[2]) ~= ARGV[3] then return {'lost'} end
redis.call('PEXPIRE', KEYS[2], ARGV[4])
local e = redis.call('XRANGE', KEYS[1], ARGV[2], ARGV[2])
if #e == 0 then
  redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
  forget(KEYS[3], KEYS[4], ARGV[2])
  return {'gone', stats(KEYS[1], ARGV[1], KEYS[3], true)}
end
local behind = redis.call('HGET', KEYS[5], ARGV[5])
if behind then
  local n = redis.call('HGET', KEYS[3], ARGV[2]) or '0'
  dead_letter(KEYS, ARGV[1], ARGV[2], e[1][2], 'parked', behind, n)
  return {'parked', behind, stats(KEYS[1], ARGV[1], KEYS[3], true)}
end
local now = now_ms()
local n = redis.call('HINCRBY', KEYS[3], ARGV[2], 1)
redis.call('HSETNX', KEYS[3], 'f:' .. ARGV[2], now)
local first = redis.call('HGET', KEYS[3], 'f:' .. ARGV[2])
redis.call('ZREM', KEYS[4], ARGV[2])
return {'ok', n, tonumber(now) - tonumber(first), stats(KEYS[1], ARGV[1], KEYS[3], true)}
