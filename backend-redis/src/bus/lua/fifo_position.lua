-- Position. ARGV: 1 now, 2 id. Answers {position, ticket, deadline} or nil.
local id = ARGV[2]
sweep()
local ticket, dl_s = parse_info(redis.call('HGET', INFO, id))
if not ticket then return nil end
local pos = position_of(id)
if not pos then return nil end
return {pos, ticket, dl_s}
