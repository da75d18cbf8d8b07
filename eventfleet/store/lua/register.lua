-- KEYS: live, gone. ARGV: worker id, client id, node, stale-after ms. Registers the worker's
-- liveness connection, clears it from the gone set, drops stale records. Returns Redis' time
-- (ms). now_ms: prelude.lua.
local now = now_ms()
for _, m in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  if string.match(m, '^(%S+) ') == ARGV[1] then redis.call('ZREM', KEYS[1], m) end
end
redis.call('ZADD', KEYS[1], now, ARGV[1] .. ' ' .. ARGV[2] .. ' ' .. ARGV[3])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[4]))
return now
