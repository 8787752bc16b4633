-- Admin::release: ends the quarantine of one position.
-- KEYS: 1 quarantined positions (lex set), 2 quarantine records (hash)
-- ARGV: 1 the position's member
-- Answers 1 when it was quarantined, 0 when not. Both keys in one script: a reader never
-- sees a position listed without its record or the other way round.
local n = redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
return n
