-- Shared snippets, joined before the body of the scripts that use them (after the flags line).

-- Redis' clock in ms: the same for every client, so no skew between hosts.
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Whether stream entry id x ('<ms>-<seq>') is below entry id y.
local function id_less(x, y)
  local a, b = string.match(x, '^(%d+)-(%d+)$')
  local c, d = string.match(y, '^(%d+)-(%d+)$')
  a, b, c, d = tonumber(a), tonumber(b), tonumber(c), tonumber(d)
  return a < c or (a == c and b < d)
end
