-- Dequeue or peek. ARGV: 1 now, 2 '1' to remove the head, '0' to only look.
-- Answers {id, payload, ticket, deadline} or nil.
sweep()
local id = redis.call('LINDEX', LIST, 0)
if not id then return nil end
local ticket, dl_s = parse_info(redis.call('HGET', INFO, id))
local payload = redis.call('HGET', DATA, id)
if ARGV[2] == '1' then
  redis.call('LPOP', LIST)
  forget(id)
end
return {id, payload or '', ticket or '0', dl_s or '0'}
