-- Admin::quarantine: sets one event of a partition's log aside, so every read_all skips it.
-- KEYS: 1 partition log, 2 quarantined positions (lex set), 3 quarantine records (hash)
-- ARGV: 1 log entry id `<ms>-<seq>`, 2 index in the commit (decimal), 3 the position's
--       member (fixed width, see quarantine.rs), 4 the operator's reason
-- Answers {'ok'} or {'notfound', what}. The check and the write are one script, so the
-- position is checked against the log as it is when the record is written.
local e = redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1])[1]
if not e then return {'notfound', 'no log entry ' .. ARGV[1]} end
local s, f, t
local fields = e[2]
for i = 1, #fields, 2 do
  local k = fields[i]
  if k == 's' then s = fields[i + 1] elseif k == 'f' then f = fields[i + 1] elseif k == 't' then t = fields[i + 1] end
end
if s and f and t and is_version(f) and is_version(t) and not dec_gt(f, t) then
  -- A readable commit holds the events at indexes 0 ..= t - f.
  if dec_gt(ARGV[2], dec_sub(t, f)) then
    return {'notfound', 'no event at index ' .. ARGV[2] .. ' of log entry ' .. ARGV[1]}
  end
elseif ARGV[2] ~= '0' then
  -- An entry without its stream and versions has no events to count: it is set aside
  -- whole, as index 0 (the position read_all's Corrupt names for it).
  return {'notfound', 'log entry ' .. ARGV[1] .. ' is unreadable: quarantine it whole as index 0'}
end
-- A second quarantine keeps the first record (NX).
if redis.call('ZADD', KEYS[2], 'NX', 0, ARGV[3]) == 1 then
  redis.call('HSET', KEYS[3], ARGV[3], now_ms() .. ' ' .. ARGV[4])
end
return {'ok'}
