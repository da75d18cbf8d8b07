#!lua flags=allow-oom
-- KEYS: archived marks hash. ARGV: stream name, entry id. Raises the stream's field to the
-- id, never lowers it. Returns 1 when raised, else 0. id_less: prelude.lua.
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if cur and not id_less(cur, ARGV[2]) then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
