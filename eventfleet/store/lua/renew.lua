-- KEYS: lease. ARGV: token, ttl ms. Returns 1 when renewed, 0 when the lease is not ours.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
