-- Deletes a stream softly or for ever, and its snapshots.
-- KEYS: 1 head, 2 live streams, 3 snapshots hash, 4 snapshot versions, 5 streams with snapshots
-- ARGV: 1 stream, 2 expectation, 3 exact version, 4 mode (soft|tomb)
local v, st, vf, bad = stream_head(KEYS[1])
if st == 'T' then return {'deleted'} end
if bad then return bad end
if not expectation_holds(ARGV[2], ARGV[3], v, st) then
  return {'conflict', state_str(v, st)}
end
if not st then return {'ok'} end
if ARGV[4] == 'soft' then
  redis.call('HSET', KEYS[1], 'st', 'S', 'vf', dec_max(vf, dec_add(v, 1)))
else
  redis.call('HSET', KEYS[1], 'st', 'T')
end
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('DEL', KEYS[3], KEYS[4])
redis.call('ZREM', KEYS[5], ARGV[1])
return {'ok'}
