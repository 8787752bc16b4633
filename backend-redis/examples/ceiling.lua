-- The raw ceiling of an append (bench and append_profile): only the version check, the
-- XADDs and the version update, nothing of ours.
local v = redis.call('HGET', KEYS[1], 'v') or '0'
if ARGV[1] ~= 'any' and ARGV[1] ~= v then return 0 end
local n = tonumber(ARGV[2])
for i = 1, n do redis.call('XADD', KEYS[2], '*', 'p', ARGV[2 + i]) end
redis.call('HSET', KEYS[1], 'v', tostring(tonumber(v) + n))
return 1
