-- KEYS: written mark, lease, model (a hash). ARGV: token, upto (the last entry id the values
-- fold), n, then n words of field/value pairs as the model holds them (worker/model.py:
-- ModelWrite), then the fields to delete (optional).
-- First raises the written mark to upto, as mark_written does (the values are an effect of
-- the entries up to there; never lowered). Then the model, fenced by the lease: 0 when the
-- lease does not hold the token, or when the model already folds past upto (a takeover
-- replaying older entries, a paused owner's late write). Else 1, or 2 when the model had no
-- _upto before (new, or lost): the caller then writes every value it holds. The values are
-- absolute (a balance, not a change), so writing them again is harmless. The pairs go to
-- HSET as they came (no word parsed or built here: that cost Redis about twice as much per
-- field). id_less: prelude.lua.
local mark = redis.call('GET', KEYS[1])
if not mark or id_less(mark, ARGV[2]) then redis.call('SET', KEYS[1], ARGV[2]) end
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return 0 end
local model = KEYS[3]
local cur = redis.call('HGET', model, '_upto')
if cur and id_less(ARGV[2], cur) then return 0 end
local last = 3 + tonumber(ARGV[3])
local i = 4
while i <= last do
  local j = math.min(i + 3999, last)
  redis.call('HSET', model, unpack(ARGV, i, j))
  i = j + 1
end
while i <= #ARGV do
  local j = math.min(i + 3999, #ARGV)
  redis.call('HDEL', model, unpack(ARGV, i, j))
  i = j + 1
end
redis.call('HSET', model, '_upto', ARGV[2])
if cur then return 1 end
return 2
