-- Remove one entry wherever it is. ARGV: 1 now, 2 id. Answers 1 if it was queued, else 0.
local id = ARGV[2]
sweep()
if redis.call('HEXISTS', INFO, id) == 0 then return 0 end
redis.call('LREM', LIST, 1, id)
forget(id)
return 1
