-- Takes or renews a lease by the server's clock.
-- KEYS: 1 epochs, 2 owners, 3 expiries (ms); ARGV: 1 name, 2 owner, 3 ttl (ms)
local now = tonumber(now_ms())
local epoch = redis.call('HGET', KEYS[1], ARGV[1])
local owner = redis.call('HGET', KEYS[2], ARGV[1])
local exp = tonumber(redis.call('HGET', KEYS[3], ARGV[1]) or '0')
local new_epoch
if epoch and exp > now and owner ~= ARGV[2] then return {'held', owner or ''} end
if epoch and exp > now then
  new_epoch = epoch
elseif epoch then
  new_epoch = dec_add(epoch, 1)
else
  new_epoch = '1'
end
local until_ms = string.format('%d', now + tonumber(ARGV[3]))
redis.call('HSET', KEYS[1], ARGV[1], new_epoch)
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('HSET', KEYS[3], ARGV[1], until_ms)
return {'ok', new_epoch, until_ms}
