-- Creates consumer group ARGV[1] on stream KEYS[1] at ARGV[2] ('0' or '$') unless it exists
-- (an existing group resumes after its last acknowledgement).
if group_info(KEYS[1], ARGV[1]) then return 'exists' end
redis.call('XGROUP', 'CREATE', KEYS[1], ARGV[1], ARGV[2], 'MKSTREAM')
return 'created'
