-- The partition's stats for a group (see `stats` in the bus common part), read only.
-- KEYS: stream, attempts; ARGV: group.
return stats(KEYS[1], ARGV[1], KEYS[2], false)
