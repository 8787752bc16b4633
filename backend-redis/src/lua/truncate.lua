-- Hides versions below ARGV[1]; the stream's version is unchanged.
-- KEYS: 1 head
if redis.call('EXISTS', KEYS[1]) == 0 then return {'ok'} end
local _, st, vf, bad = stream_head(KEYS[1])
if st == 'T' then return {'deleted'} end
if bad then return bad end
redis.call('HSET', KEYS[1], 'vf', dec_max(vf, ARGV[1]))
return {'ok'}
