-- Enqueue. ARGV: 1 now, 2 id, 3 payload, 4 deadline (integer ms, as a decimal string).
-- Answers {'added', ticket, position} or {'dup', ticket, position} (the id is queued and
-- live: nothing was written).
local id, payload, dl_s = ARGV[2], ARGV[3], ARGV[4]
local dl = tonumber(dl_s)
sweep()
local ticket = parse_info(redis.call('HGET', INFO, id))
if ticket then
  return {'dup', ticket, position_of(id)}
end
ticket = string.format('%d', redis.call('INCR', SEQ))
redis.call('HSET', INFO, id, ticket .. ':' .. dl_s)
redis.call('HSET', DATA, id, payload)
local len = redis.call('RPUSH', LIST, id)
if len == 1 then
  -- Alone in the queue: order and deadlines agree.
  redis.call('DEL', STATE)
  redis.call('HSET', STATE, 'last', dl_s)
  return {'added', ticket, len}
end
local last = redis.call('HGET', STATE, 'last')
if redis.call('HGET', STATE, 'mono') ~= '0' then
  if last and dl < tonumber(last) then
    -- Deadlines now decrease along the list (another TTL, or a client clock behind):
    -- sweeps need full passes from here. In monotone order the head had the smallest.
    local head = redis.call('LINDEX', LIST, 0)
    local _, head_s, head_dl = parse_info(redis.call('HGET', INFO, head))
    local low_s = dl_s
    if head_dl and head_dl < dl then low_s = head_s end
    redis.call('HSET', STATE, 'mono', '0', 'min', low_s)
  end
else
  local min = redis.call('HGET', STATE, 'min')
  if not min or dl < tonumber(min) then redis.call('HSET', STATE, 'min', dl_s) end
end
if not last or dl > tonumber(last) then redis.call('HSET', STATE, 'last', dl_s) end
return {'added', ticket, len}
