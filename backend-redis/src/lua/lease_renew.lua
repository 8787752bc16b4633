-- Extends a lease still held by ARGV[2] at epoch ARGV[3], or releases it (ARGV[4] = 'release').
-- KEYS: 1 epochs, 2 owners, 3 expiries; ARGV: 1 name, 2 owner, 3 epoch, 4 ttl (ms) or 'release'
local now = tonumber(now_ms())
local epoch = redis.call('HGET', KEYS[1], ARGV[1])
local owner = redis.call('HGET', KEYS[2], ARGV[1])
if epoch ~= ARGV[3] or owner ~= ARGV[2] then return {'fenced', epoch or '0'} end
local until_ms
if ARGV[4] == 'release' then
  local exp = tonumber(redis.call('HGET', KEYS[3], ARGV[1]) or '0')
  if exp > now then exp = now end
  until_ms = string.format('%d', exp)
else
  until_ms = string.format('%d', now + tonumber(ARGV[4]))
end
redis.call('HSET', KEYS[3], ARGV[1], until_ms)
return {'ok', epoch, until_ms}
