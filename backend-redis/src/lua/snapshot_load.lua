-- The snapshot with the highest version <= ARGV[1] ('+' for any).
-- KEYS: 1 snapshots hash, 2 versions
local r = redis.call('ZREVRANGEBYLEX', KEYS[2], ARGV[1], '-', 'LIMIT', 0, 1)
if not r[1] then return {} end
local s = redis.call('HGET', KEYS[1], r[1])
if not s then return {} end
return {r[1], s}
