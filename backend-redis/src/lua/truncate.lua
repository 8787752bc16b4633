-- Hides versions below ARGV[1]; the stream's version is unchanged.
-- KEYS: 1 head
if redis.call('EXISTS', KEYS[1]) == 0 then return {'ok'} end
local v, st, vf = stream_head(KEYS[1])
if st == 'T' then return {'deleted'} end
redis.call('HSET', KEYS[1], 'vf', dec_max(vf, ARGV[1]))
return {'ok'}
