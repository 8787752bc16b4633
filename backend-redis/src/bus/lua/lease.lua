-- Takes, renews or releases partition leases (one per KEYS entry) for token ARGV[2].
-- ARGV: op ('acquire', 'renew' or 'release'), token, ttl (ms). Returns 1 (held by the
-- token afterwards, or released) or 0 (held by another, or lost) per key.
local out = {}
for i, k in ipairs(KEYS) do
  local cur = redis.call('GET', k)
  if ARGV[1] == 'acquire' and not cur then
    redis.call('SET', k, ARGV[2], 'PX', ARGV[3])
    out[i] = 1
  elseif cur ~= ARGV[2] then
    out[i] = 0
  elseif ARGV[1] == 'release' then
    redis.call('DEL', k)
    out[i] = 1
  else
    redis.call('PEXPIRE', k, ARGV[3])
    out[i] = 1
  end
end
return out
