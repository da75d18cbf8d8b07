-- KEYS: lease, events stream, inbox. ARGV: max element bytes, max events per bundle, max
-- bundle chars (move_inbox's limits), token, consumer, count, start id ('>' or a pending id),
-- last applied id, the most inbox elements to move. Returns entries, or the error FENCED /
-- BLOCKED. move_inbox: move_inbox.lua.
if redis.call('GET', KEYS[1]) ~= ARGV[4] then return redis.error_reply('FENCED lease lost') end
if ARGV[7] ~= '>' then
  local r = redis.call('XREADGROUP', 'GROUP', 'workers', ARGV[5], 'COUNT', ARGV[6],
                       'STREAMS', KEYS[2], ARGV[7])
  if not r then return {} end
  return r[1][2]
end
local p = redis.call('XREADGROUP', 'GROUP', 'workers', ARGV[5], 'COUNT', ARGV[6],
                     'STREAMS', KEYS[2], ARGV[8])
if p and #p[1][2] > 0 then return p[1][2] end
local _, blocked = move_inbox(KEYS[2], KEYS[3], tonumber(ARGV[9]),
                              tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]))
local r = redis.call('XREADGROUP', 'GROUP', 'workers', ARGV[5], 'COUNT', ARGV[6],
                     'STREAMS', KEYS[2], '>')
if r and #r[1][2] > 0 then return r[1][2] end
if blocked then return redis.error_reply('BLOCKED ' .. blocked) end
return {}
