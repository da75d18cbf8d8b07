#!lua flags=allow-oom
-- KEYS: workers. ARGV: worker id ('' to only prune), ttl ms. Returns {now ms, {member,
-- expiry ms, ...}}. now_ms: prelude.lua.
local now = now_ms()
if ARGV[1] ~= '' then redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1]) end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
return {now, redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')}
