-- KEYS: a split shard's child's events stream, the child's forwarded-marks hash, the child's
-- snapshot, the child's read model. ARGV: the sending shard (the child's parent), the child's
-- seed snapshot ('': none in this call), n, then n words of the seed's read-model
-- field/value pairs (worker/model.py: fields), then per forwarded entry: the sender's entry
-- id it came from, its path, its producer scope ('': none), its text.
-- The model's pairs are set only while the child has no snapshot yet, with _upto 0-0 (they
-- fold the seed): no owner of the child exists before its seed (worker/growth.py), so they
-- never overwrite an owner's values, and a key the parent lets go has a field in the child's
-- model before the parent's model drops it (the caller queues this first). A large seed's
-- pairs come in several calls, the seed in the last. The seed is set only where the child
-- has no snapshot yet (SET NX: every replay of the parent gives the same bytes). An entry is
-- appended only when its sender's entry id is above the sender's mark in the hash as the
-- call starts (the entries of one sender's entry all come in one call), then the mark is
-- raised to the last: a batch written again, or a takeover's replay, forwards nothing twice.
-- Returns the entries appended. id_less: prelude.lua.
local n = tonumber(ARGV[3])
if n > 0 and redis.call('EXISTS', KEYS[3]) == 0 then
  local i = 4
  local last = 3 + n
  while i <= last do
    local j = math.min(i + 3999, last)
    redis.call('HSET', KEYS[4], unpack(ARGV, i, j))
    i = j + 1
  end
  redis.call('HSET', KEYS[4], '_upto', '0-0')
end
if ARGV[2] ~= '' then redis.call('SET', KEYS[3], ARGV[2], 'NX') end
local mark = redis.call('HGET', KEYS[2], ARGV[1])
local last = mark
local added = 0
for i = 4 + n, #ARGV, 4 do
  local eid = ARGV[i]
  if not mark or id_less(mark, eid) then
    if ARGV[i + 2] == '' then
      redis.call('XADD', KEYS[1], '*', 'event', ARGV[i + 3], 'fwd', ARGV[i + 1])
    else
      redis.call('XADD', KEYS[1], '*', 'event', ARGV[i + 3], 'fwd', ARGV[i + 1],
                 'by', ARGV[i + 2])
    end
    added = added + 1
    if not last or id_less(last, eid) then last = eid end
  end
end
if last and last ~= mark then redis.call('HSET', KEYS[2], ARGV[1], last) end
return added
