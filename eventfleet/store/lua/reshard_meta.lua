-- KEYS: the reshard lease, the meta hash (one slot: the lease's hash tag is the meta key's
-- name). ARGV: the run's lease token, then field/value pairs to set, then '--', then
-- field/value pairs to set only where the field is absent. Returns 1 when written, 0 (and
-- nothing written) when the lease does not hold the token: a run that lost its lease
-- (paused past its TTL, or superseded) cannot write meta any more.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
local i = 2
while i <= #ARGV and ARGV[i] ~= '--' do
  redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
  i = i + 2
end
i = i + 1
while i < #ARGV do
  redis.call('HSETNX', KEYS[2], ARGV[i], ARGV[i + 1])
  i = i + 2
end
return 1
