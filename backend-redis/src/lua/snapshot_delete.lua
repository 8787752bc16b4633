-- Deletes every snapshot of a stream; returns how many there were.
-- KEYS: 1 snapshots hash, 2 versions, 3 streams with snapshots; ARGV: 1 stream
local n = redis.call('ZCARD', KEYS[2])
redis.call('DEL', KEYS[1], KEYS[2])
redis.call('ZREM', KEYS[3], ARGV[1])
return n
