-- Reads new entries of the partitions this consumer owns (XREADGROUP '>'), refusing a
-- partition whose lease the token no longer holds, so a consumer that lost a partition
-- never takes entries of it.
-- KEYS: per partition stream, lease, attempts; ARGV: group, consumer, token, then a count
-- per partition. Returns per partition {'lost'} or {'ok', entries, stats}.
local out = {}
for i = 1, #KEYS, 3 do
  local s, l, a = KEYS[i], KEYS[i + 1], KEYS[i + 2]
  if redis.call('GET', l) ~= ARGV[3] then
    out[#out + 1] = {'lost'}
  else
    local r = redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', ARGV[3 + (i + 2) / 3],
      'STREAMS', s, '>')
    local entries = {}
    if r then entries = r[1][2] end
    out[#out + 1] = {'ok', entries, stats(s, ARGV[1], a, #entries > 0)}
  end
end
return out
