-- KEYS: written mark. ARGV: entry id. Raises the mark to the id, never lowers it. Returns 1
-- when raised, 0 when the mark was at or above it. id_less: prelude.lua.
local cur = redis.call('GET', KEYS[1])
if cur and not id_less(cur, ARGV[1]) then return 0 end
redis.call('SET', KEYS[1], ARGV[1])
return 1
