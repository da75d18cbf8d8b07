#!lua flags=allow-oom
-- KEYS: lease, snapshot. ARGV: token, snapshot. Returns 1 when written, 0 when the lease is
-- not ours.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[2], ARGV[2])
return 1
