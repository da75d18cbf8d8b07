-- KEYS: written mark, lease, model (a hash). ARGV: token, upto (the last entry id the values
-- fold), then field/value pairs to set, then '--' and the fields to delete (optional).
-- First raises the written mark to upto, as mark_written does (the values are an effect of
-- the entries up to there; never lowered). Then the model, fenced by the lease: 0 when the
-- lease does not hold the token, or when the model already folds past upto (a takeover
-- replaying older entries, a paused owner's late write). Else 1, or 2 when the model had no
-- _upto before (new, or lost): the caller then writes every value it holds. The values are
-- absolute (a balance, not a change), so writing them again is harmless. id_less: prelude.lua.
local mark = redis.call('GET', KEYS[1])
if not mark or id_less(mark, ARGV[2]) then redis.call('SET', KEYS[1], ARGV[2]) end
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return 0 end
local cur = redis.call('HGET', KEYS[3], '_upto')
if cur and id_less(ARGV[2], cur) then return 0 end
local n = #ARGV
local sep = n + 1
for i = 3, n do
  if ARGV[i] == '--' then sep = i break end
end
local chunk = 4000
local i = 3
while i < sep do
  local j = math.min(i + chunk - 1, sep - 1)
  redis.call('HSET', KEYS[3], unpack(ARGV, i, j))
  i = j + 1
end
i = sep + 1
while i <= n do
  local j = math.min(i + chunk - 1, n)
  redis.call('HDEL', KEYS[3], unpack(ARGV, i, j))
  i = j + 1
end
redis.call('HSET', KEYS[3], '_upto', ARGV[2])
if cur then return 1 end
return 2
