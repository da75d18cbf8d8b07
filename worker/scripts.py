"""Lua scripts. Each touches the keys of one shard only (one hash tag, one cluster slot).

The fence: every write that a paused, superseded worker could make stale first checks that
the shard's lease still holds this worker's ``<worker id>:<epoch>`` token. Reads through the
consumer group are fenced too, so a zombie cannot pull entries away from the new owner.
"""

from __future__ import annotations

from dataclasses import dataclass

import redis
from redis.commands.core import Script

ACQUIRE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return false end
local epoch = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], ARGV[1] .. ':' .. epoch, 'PX', ARGV[2])
return epoch
"""

RENEW = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
"""

RELEASE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
return 1
"""

SAVE_SNAPSHOT = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[2], ARGV[2])
return 1
"""

# KEYS: lease, events stream. ARGV: token, consumer, count, start id ('>' or a pending id)
FENCED_READ = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return redis.error_reply('FENCED lease lost') end
local r = redis.call('XREADGROUP', 'GROUP', 'workers', ARGV[2], 'COUNT', ARGV[3],
                     'STREAMS', KEYS[2], ARGV[4])
if not r then return {} end
return r[1][2]
"""

# Append records to a stream at most once each, by a per-stream sequence number kept in the
# records themselves (field 'seq'). KEYS: stream. ARGV: nfields, then per record: seq,
# followed by nfields name/value pairs. Records at or below the last seq are skipped.
APPEND_ONCE = """
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
    local args = {'XADD', KEYS[1], '*', 'seq', ARGV[i]}
    for j = 1, 2 * n do args[#args + 1] = ARGV[i + j] end
    redis.call(unpack(args))
    last = seq
    added = added + 1
  end
  i = i + 1 + 2 * n
end
return added
"""

# Heartbeat with Redis' clock (no skew between hosts) and prune the dead; return the live.
HEARTBEAT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if ARGV[1] ~= '' then redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1]) end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
return redis.call('ZRANGE', KEYS[1], 0, -1)
"""


@dataclass(frozen=True)
class Scripts:
    acquire: Script
    renew: Script
    release: Script
    save_snapshot: Script
    fenced_read: Script
    append_once: Script
    heartbeat: Script

    @classmethod
    def register(cls, r: redis.Redis) -> Scripts:
        return cls(
            acquire=r.register_script(ACQUIRE),
            renew=r.register_script(RENEW),
            release=r.register_script(RELEASE),
            save_snapshot=r.register_script(SAVE_SNAPSHOT),
            fenced_read=r.register_script(FENCED_READ),
            append_once=r.register_script(APPEND_ONCE),
            heartbeat=r.register_script(HEARTBEAT),
        )
