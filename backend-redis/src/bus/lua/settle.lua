-- Ends a delivery, if the token still holds the partition's lease:
--   'ack'   acknowledges it and forgets its counters;
--   'drop'  the same, for a message given up on with the dead letter off;
--   'retry' keeps it pending and schedules it ARGV[5] ms from now (integer ms score);
--   'dead'  dead-letters it with its acknowledgement (ARGV[5] reason, ARGV[6] detail) and,
--           when ARGV[7] is '1', parks later messages of key ARGV[8] behind id ARGV[9].
-- KEYS: stream, lease, attempts, retry, parked, dead; ARGV: op, group, id, token, ...
-- Returns {'lost'} or {'ok', stats}.
if redis.call('GET', KEYS[2]) ~= ARGV[4] then return {'lost'} end
local op, group, id = ARGV[1], ARGV[2], ARGV[3]
if op == 'retry' then
  redis.call('ZADD', KEYS[4], string.format('%d', tonumber(now_ms()) + tonumber(ARGV[5])), id)
elseif op == 'dead' then
  local e = redis.call('XRANGE', KEYS[1], id, id)
  local fields = {}
  if #e > 0 then fields = e[1][2] end
  local n = attempts_of(KEYS[3], id)
  dead_letter(KEYS, group, id, fields, ARGV[5], ARGV[6], n)
  if ARGV[7] == '1' then redis.call('HSET', KEYS[5], ARGV[8], ARGV[9]) end
else
  redis.call('XACK', KEYS[1], group, id)
  forget(KEYS[3], KEYS[4], id)
end
return {'ok', stats(KEYS[1], group, KEYS[3], true)}
