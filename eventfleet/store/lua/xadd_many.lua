-- KEYS: events stream, the dropped counts (hash), the shared inbox, then the producers' own
-- inboxes of the shard. ARGV: max element bytes, max events per bundle, max bundle chars
-- (move_inbox's limits), the most inbox elements to move, a producer's largest element, its
-- bound in events and in bytes, then one producer name per own inbox (KEYS[4]...), then entry
-- texts. Returns the number of texts appended. move_inboxes: move_inbox.lua.
local inboxes, names = {KEYS[3]}, {false}
for i = 4, #KEYS do
  inboxes[#inboxes + 1] = KEYS[i]
  names[#names + 1] = ARGV[i + 4]
end
move_inboxes(KEYS[1], KEYS[2], inboxes, names, tonumber(ARGV[4]),
             tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]),
             tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7]))
local first = #KEYS + 5
for i = first, #ARGV do
  redis.call('XADD', KEYS[1], '*', 'event', ARGV[i])
end
return #ARGV - first + 1
