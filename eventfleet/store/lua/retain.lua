#!lua flags=allow-oom
-- KEYS: lease, events, outcomes, dlq, snapshot, trim base, archived marks. ARGV: token,
-- snapshot's last entry id, snapshot's wall time ms, retention window ms, '1' when trimming
-- waits for the archive. Returns -1 when the lease is not ours, else {events, outcomes, dlq}
-- entries removed. now_ms, id_less: prelude.lua.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
local function lower(x, y) if id_less(x, y) then return x end return y end
local function bound(field, limit)
  local mark = redis.call('HGET', KEYS[7], field)
  if mark then return lower(limit, mark) end
  if ARGV[5] == '1' then return '0-0' end
  return limit
end
local now = now_ms()
local cutoff = math.max(0, now - tonumber(ARGV[4])) .. '-0'
local removed = {0, 0, 0}
local ev = bound('events', lower(ARGV[2], cutoff))
local first = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', 1)
if #first > 0 and id_less(first[1][1], ev) then
  redis.call('COPY', KEYS[5], KEYS[6], 'REPLACE')
  removed[1] = redis.call('XTRIM', KEYS[2], 'MINID', ev)
end
local rec = lower(cutoff, ARGV[3] .. '-0')
local records = {{KEYS[3], 'outcomes'}, {KEYS[4], 'dlq'}}
for i = 1, 2 do
  local key, field = records[i][1], records[i][2]
  local last = redis.call('XREVRANGE', key, '+', '-', 'COUNT', 1)
  if #last > 0 then
    local b = lower(bound(field, rec), last[1][1])
    local f = redis.call('XRANGE', key, '-', '+', 'COUNT', 1)
    if id_less(f[1][1], b) then removed[i + 1] = redis.call('XTRIM', key, 'MINID', b) end
  end
end
return removed
