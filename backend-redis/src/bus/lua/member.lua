-- Group membership by the server's clock: consumer -> heartbeat expiry (ms).
-- KEYS[1] members; ARGV: op ('join', 'beat' or 'leave'), consumer, ttl (ms).
-- Returns {'exists'} when joining under a live name, else {'ok', live members...}.
local now = tonumber(now_ms())
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if ARGV[1] == 'leave' then
  redis.call('ZREM', KEYS[1], ARGV[2])
  return {'ok'}
end
if ARGV[1] == 'join' and redis.call('ZSCORE', KEYS[1], ARGV[2]) then return {'exists'} end
redis.call('ZADD', KEYS[1], string.format('%d', now + tonumber(ARGV[3])), ARGV[2])
local out = {'ok'}
for _, m in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do out[#out + 1] = m end
return out
