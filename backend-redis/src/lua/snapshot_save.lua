-- Saves a snapshot (replacing one at the same version).
-- KEYS: 1 snapshots hash, 2 versions (lex set of zero-padded versions), 3 streams with snapshots
-- ARGV: 1 stream, 2 padded version, 3 encoded snapshot
redis.call('HSET', KEYS[1], ARGV[2], ARGV[3])
redis.call('ZADD', KEYS[2], 0, ARGV[2])
redis.call('ZADD', KEYS[3], 0, ARGV[1])
return 1
