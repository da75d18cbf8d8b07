#!lua flags=allow-oom
-- KEYS: lease, epoch. ARGV: worker id, ttl ms, reclaim ('1' or '0'), then the workers whose
-- leases may be broken. Returns the new epoch; {new epoch, broken token}; or the holder's token.
local holder = redis.call('GET', KEYS[1])
local broken = false
if holder then
  local owner = string.match(holder, '^(.*):%d+$')
  local mine = ARGV[3] == '1' and owner == ARGV[1]
  for i = 4, #ARGV do
    if ARGV[i] == owner then broken = true end
  end
  if not mine and not broken then return holder end
end
local epoch = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], ARGV[1] .. ':' .. epoch, 'PX', ARGV[2])
if broken then return {epoch, holder} end
return epoch
