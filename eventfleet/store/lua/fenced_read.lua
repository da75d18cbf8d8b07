#!lua flags=allow-oom
-- KEYS: lease, events stream, the dropped counts (hash), the shared inbox, then the
-- producers' own inboxes of the shard. ARGV: max element bytes, max events per bundle, max
-- bundle chars (move_inbox's limits), token, consumer, count, start id ('>' or a pending id),
-- last applied id, the most inbox elements to move, a producer's largest element, its bound
-- in events and in bytes, then one producer name per own inbox (KEYS[5]...). Returns entries,
-- or the error FENCED / BLOCKED. move_inboxes: move_inbox.lua. allow-oom: at maxmemory the
-- move goes on (it frees a flooding producer's inbox and moves the others' events; what it
-- adds to the log it takes from an inbox).
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
local inboxes, names = {KEYS[4]}, {false}
for i = 5, #KEYS do
  inboxes[#inboxes + 1] = KEYS[i]
  names[#names + 1] = ARGV[i + 8]
end
local _, blocked = move_inboxes(KEYS[2], KEYS[3], inboxes, names, tonumber(ARGV[9]),
                                tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]),
                                tonumber(ARGV[10]), tonumber(ARGV[11]), tonumber(ARGV[12]))
local r = redis.call('XREADGROUP', 'GROUP', 'workers', ARGV[5], 'COUNT', ARGV[6],
                     'STREAMS', KEYS[2], '>')
if r and #r[1][2] > 0 then return r[1][2] end
if blocked then return redis.error_reply('BLOCKED ' .. blocked) end
return {}
