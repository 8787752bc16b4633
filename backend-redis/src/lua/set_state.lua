-- Sets a stream's state after an import (Admin::set_stream_state).
-- KEYS: 1 head, 2 live streams, 3 all streams
-- ARGV: 1 stream, 2 state (M|L|S|T), 3 version
local exists = redis.call('EXISTS', KEYS[1]) == 1
local v, st, vf = stream_head(KEYS[1])
local kind = ARGV[2]
if kind == 'M' then
  if v ~= '0' then return {'invalid', 'it holds events'} end
  if not exists then return {'ok'} end
  redis.call('HDEL', KEYS[1], 'st')
  redis.call('ZREM', KEYS[2], ARGV[1])
  return {'ok'}
end
if (kind == 'L' or kind == 'S') and (ARGV[3] == '0' or ARGV[3] ~= v) then
  return {'invalid', 'the version must be its last stored version'}
end
if kind == 'L' then
  redis.call('HSET', KEYS[1], 'v', v, 'st', 'L')
  redis.call('ZADD', KEYS[2], 0, ARGV[1])
elseif kind == 'S' then
  redis.call('HSET', KEYS[1], 'v', v, 'st', 'S', 'vf', dec_max(vf, dec_add(v, 1)))
  redis.call('ZREM', KEYS[2], ARGV[1])
else
  redis.call('HSET', KEYS[1], 'v', v, 'st', 'T')
  redis.call('ZREM', KEYS[2], ARGV[1])
end
redis.call('ZADD', KEYS[3], 0, ARGV[1])
return {'ok'}
