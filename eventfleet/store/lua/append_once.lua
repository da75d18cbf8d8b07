-- KEYS: stream. ARGV: nfields, then per record: seq, then nfields name/value pairs. Records
-- at or below the stream's last seq are skipped. Returns the records added.
local last = 0
local tail = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
if #tail > 0 then
  local f = tail[1][2]
  for i = 1, #f, 2 do if f[i] == 'seq' then last = tonumber(f[i + 1]) end end
end
local n = tonumber(ARGV[1])
local i = 2
local added = 0
while i <= #ARGV do
  local seq = tonumber(ARGV[i])
  if seq > last then
    if n == 1 then  -- outcome records: no table to build
      redis.call('XADD', KEYS[1], '*', 'seq', ARGV[i], ARGV[i + 1], ARGV[i + 2])
    else
      local args = {'XADD', KEYS[1], '*', 'seq', ARGV[i]}
      for j = 1, 2 * n do args[#args + 1] = ARGV[i + j] end
      redis.call(unpack(args))
    end
    last = seq
    added = added + 1
  end
  i = i + 1 + 2 * n
end
return added
