-- KEYS: events stream, poison set. ARGV: after id, count. Returns {acked entries after the
-- id, the poison set, max-deleted-entry-id, first entry id once anything was removed ('0-0'
-- when nothing ever was)}; {} when the stream has no group.
local delivered = nil
for _, g in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
  local name, last = nil, nil
  for i = 1, #g, 2 do
    if g[i] == 'name' then name = g[i + 1] end
    if g[i] == 'last-delivered-id' then last = g[i + 1] end
  end
  if name == 'workers' then delivered = last end
end
if not delivered then return {} end
local deleted, first, added, length = '0-0', '0-0', 0, 0
local info = redis.call('XINFO', 'STREAM', KEYS[1])
for i = 1, #info, 2 do
  if info[i] == 'max-deleted-entry-id' then deleted = info[i + 1] end
  if info[i] == 'recorded-first-entry-id' then first = info[i + 1] end
  if info[i] == 'entries-added' then added = info[i + 1] end
  if info[i] == 'length' then length = info[i + 1] end
end
if added == length then first = '0-0' end
local upto = delivered
local pending = redis.call('XPENDING', KEYS[1], 'workers')
if tonumber(pending[1]) > 0 then upto = '(' .. pending[2] end
local entries = redis.call('XRANGE', KEYS[1], '(' .. ARGV[1], upto, 'COUNT', ARGV[2])
return {entries, redis.call('SMEMBERS', KEYS[2]), deleted, first}
