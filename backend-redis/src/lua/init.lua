-- Initialises the store's meta key once; returns id, epoch and partition count.
-- KEYS: 1 meta; ARGV: 1 new id, 2 partitions
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('HSET', KEYS[1], 'id', ARGV[1], 'epoch', '1', 'partitions', ARGV[2])
end
return redis.call('HMGET', KEYS[1], 'id', 'epoch', 'partitions')
