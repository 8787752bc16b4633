-- Takes over a page of the partition's pending entries after acquiring its lease: the free
-- lease proves their previous owner is gone, so min-idle is 0. Entries whose stream entry
-- was deleted are dropped from the pending list by XAUTOCLAIM; their counters go too. Each
-- subscription reads as its own Redis consumer (its token): after the last page, the other
-- Redis consumers of the group with nothing pending are removed (nothing is lost with them).
-- KEYS: stream, lease, attempts, retry; ARGV: group, consumer, token, cursor, count.
-- Returns {'lost'} or {'ok', next cursor, entries, retry due (ms or ''), server ms, stats}.
if redis.call('GET', KEYS[2]) ~= ARGV[3] then return {'lost'} end
local r = redis.call('XAUTOCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[4], 'COUNT', ARGV[5])
for _, id in ipairs(r[3] or {}) do forget(KEYS[3], KEYS[4], id) end
local entries, dues = {}, {}
for _, e in ipairs(r[2]) do
  if e then
    entries[#entries + 1] = e
    dues[#dues + 1] = redis.call('ZSCORE', KEYS[4], e[1]) or ''
  end
end
if r[1] == '0-0' then
  for _, c in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])) do
    local name = info_field(c, 'name')
    if name ~= ARGV[2] and info_field(c, 'pending') == 0 then
      redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], name)
    end
  end
end
return {'ok', r[1], entries, dues, now_ms(), stats(KEYS[1], ARGV[1], KEYS[3], true)}
