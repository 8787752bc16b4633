-- Deletes a state entry if it is at ARGV[2] ('' for no check).
-- KEYS: 1 versions hash, 2 values hash, 3 ids; ARGV: 1 id, 2 expected version
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if ARGV[2] ~= '' and cur ~= ARGV[2] then return {'conflict', cur or ''} end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
return {'ok'}
