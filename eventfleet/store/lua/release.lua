-- KEYS: lease. ARGV: token. Returns 1 when released, 0 when the lease is not ours.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
return 1
