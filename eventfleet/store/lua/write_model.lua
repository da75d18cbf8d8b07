-- KEYS: written mark, lease, model (a hash). ARGV: token, upto (the last entry id the values
-- fold), then four texts of space-separated words (worker/model.py: ModelWrite): balances
-- '<user> <balance> ...', items '<item> <remain> <price> ...', orders '<order> <1|0> ...',
-- marks '<source> <seq> ...'; then the fields to delete (optional).
-- First raises the written mark to upto, as mark_written does (the values are an effect of
-- the entries up to there; never lowered). Then the model, fenced by the lease: 0 when the
-- lease does not hold the token, or when the model already folds past upto (a takeover
-- replaying older entries, a paused owner's late write). Else 1, or 2 when the model had no
-- _upto before (new, or lost): the caller then writes every value it holds. The values are
-- absolute (a balance, not a change), so writing them again is harmless. id_less: prelude.lua.
local mark = redis.call('GET', KEYS[1])
if not mark or id_less(mark, ARGV[2]) then redis.call('SET', KEYS[1], ARGV[2]) end
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return 0 end
local model = KEYS[3]
local cur = redis.call('HGET', model, '_upto')
if cur and id_less(ARGV[2], cur) then return 0 end
local args, n = {}, 0
local function flush()
  if n > 0 then redis.call('HSET', model, unpack(args, 1, n)) end
  n = 0
end
for u, b in string.gmatch(ARGV[3], '(%S+) (%S+)') do
  args[n + 1] = 'b:' .. u
  args[n + 2] = b
  n = n + 2
  if n >= 4000 then flush() end
end
for i, r, p in string.gmatch(ARGV[4], '(%S+) (%S+) (%S+)') do
  args[n + 1] = 'i:' .. i
  args[n + 2] = r .. ' ' .. p
  n = n + 2
  if n >= 4000 then flush() end
end
for o, c in string.gmatch(ARGV[5], '(%S+) (%S+)') do
  args[n + 1] = 'o:' .. o
  if c == '1' then args[n + 2] = 'confirmed' else args[n + 2] = 'rejected' end
  n = n + 2
  if n >= 4000 then flush() end
end
for s, q in string.gmatch(ARGV[6], '(%S+) (%S+)') do
  args[n + 1] = 'w:' .. s
  args[n + 2] = q
  n = n + 2
  if n >= 4000 then flush() end
end
flush()
local i = 7
while i <= #ARGV do
  local j = math.min(i + 3999, #ARGV)
  redis.call('HDEL', model, unpack(ARGV, i, j))
  i = j + 1
end
redis.call('HSET', model, '_upto', ARGV[2])
if cur then return 1 end
return 2
