-- Removes the entries of stream KEYS[1] that every group acknowledged, atomically: per
-- group the floor is its oldest pending entry, or the entry after its last delivered one;
-- XTRIM MINID removes everything below the lowest floor. No group: nothing is removed.
local groups = {}
if redis.call('EXISTS', KEYS[1]) == 1 then groups = redis.call('XINFO', 'GROUPS', KEYS[1]) end
if #groups == 0 then return 0 end
local function parse(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return ms, seq
end
local function less(a, b)
  local am, as = parse(a)
  local bm, bs = parse(b)
  if am ~= bm then return dec_gt(bm, am) end
  return dec_gt(bs, as)
end
local floor = nil
for _, g in ipairs(groups) do
  local name = info_field(g, 'name')
  local f
  local p = redis.call('XPENDING', KEYS[1], name)
  if p[1] > 0 then
    f = p[2]
  else
    local ms, seq = parse(info_field(g, 'last-delivered-id'))
    f = ms .. '-' .. dec_add(seq, 1)
  end
  if not floor or less(f, floor) then floor = f end
end
return redis.call('XTRIM', KEYS[1], 'MINID', floor)
