-- KEYS: events stream, inbox. ARGV: max element bytes, max events per bundle, max bundle
-- chars (move_inbox's limits), the most inbox elements to move, then entry texts. Returns
-- the number of texts appended. move_inbox: move_inbox.lua.
move_inbox(KEYS[1], KEYS[2], tonumber(ARGV[4]),
           tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]))
for i = 5, #ARGV do
  redis.call('XADD', KEYS[1], '*', 'event', ARGV[i])
end
return #ARGV - 4
