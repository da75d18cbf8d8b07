-- KEYS: live, workers, gone. ARGV: worker id, its record (member of live), lease ttl ms.
-- Returns 1 when expelled, 2 when expelled already, 0 when its record changed.
-- now_ms: prelude.lua.
if redis.call('ZREM', KEYS[1], ARGV[2]) == 0 then
  if redis.call('ZSCORE', KEYS[3], ARGV[1]) then return 2 end
  return 0
end
local now = now_ms()
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
redis.call('ZADD', KEYS[3], now + tonumber(ARGV[3]), ARGV[1])
return 1
