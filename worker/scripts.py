"""Lua scripts. Each touches the keys of one shard only (one hash tag, one cluster slot).

The fence: every write that a paused, superseded worker could make stale first checks that
the shard's lease still holds this worker's ``<worker id>:<epoch>`` token. Reads through the
consumer group are fenced too, so a zombie cannot pull entries away from the new owner.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import redis
from redis.exceptions import ResponseError

from ledger.bundle import MAX_EVENTS, MAX_PACK_CHARS
from ledger.codec import MAX_ENTRY_BYTES
from store.connection import is_cluster

FENCED = "FENCED"
"""The error code ``FENCED_READ`` replies with when the shard's lease is no longer ours."""
BLOCKED = "BLOCKED"
"""The error code ``FENCED_READ`` replies with when it could neither move an inbox entry into
the log (the stream refuses new entries: missing, or at the largest id) nor read one."""

# allow-oom on the small bookkeeping scripts (ACQUIRE, SAVE_SNAPSHOT, HEARTBEAT, RETAIN): when
# Redis is at maxmemory, ownership and snapshots must go on, since a snapshot is what lets
# retention trim and so free memory. A snapshot replaces the previous one of about the same
# size. The writes that grow the data (events, outcomes, dead letters) stay refused until
# memory is freed.

# KEYS: lease, epoch. ARGV: worker id, ttl ms, reclaim ('1' or '0'), then the workers whose
# leases may be broken (their liveness connection closed: worker/liveness.py). Returns the new
# epoch (an integer); {new epoch, broken token} when it broke a gone worker's lease; or the
# holder's token (a string) when the lease is held. With reclaim, a lease still held under
# this worker id (an earlier process of the same member: static membership) is taken back
# with a new epoch, which fences that earlier process if it still runs.
ACQUIRE = """#!lua flags=allow-oom
local holder = redis.call('GET', KEYS[1])
local broken = false
if holder then
  local owner = string.match(holder, '^(.*):%d+$')
  local mine = ARGV[3] == '1' and owner == ARGV[1]
  for i = 4, #ARGV do
    if ARGV[i] == owner then broken = true end
  end
  if not mine and not broken then return holder end
end
local epoch = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], ARGV[1] .. ':' .. epoch, 'PX', ARGV[2])
if broken then return {epoch, holder} end
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

SAVE_SNAPSHOT = """#!lua flags=allow-oom
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[2], ARGV[2])
return 1
"""

# Moving a shard's inbox (what producers appended; element 1 is the head, which stays) into its
# log, in order, with server-assigned ids and the mark 'via inbox': up to `limit` elements, then
# one LTRIM, so nothing is moved twice or lost. Elements that are one flat JSON object (no
# braces or brackets inside, at most 64 KiB: every valid event is one) are joined into bundles
# of up to 100 events and 48 KiB (ledger/bundle.py), which Python cuts back at exactly these
# objects; any other element (nested, an array, not JSON, too long) gets an entry of its own, so
# no element can change where its neighbours start or end. Returns the elements moved and, when
# the stream refused an entry (missing, or at the largest id), why.
MOVE_INBOX = """
local function move_inbox(stream, inbox, limit)
  local items = redis.call('LRANGE', inbox, 1, limit)
  local moved, blocked = 0, nil
  local bundle, size = {}, 0
  local function add(text, n)
    local ok, id = pcall(redis.call, 'XADD', stream, 'NOMKSTREAM', '*',
                         'event', text, 'via', 'inbox')
    if not ok or not id then
      blocked = ok and 'the stream does not exist' or tostring(id.err or id)
      return false
    end
    moved = moved + n
    return true
  end
  local function flush()
    local n = #bundle
    if n == 0 then return true end
    local text = n == 1 and bundle[1] or ('[' .. table.concat(bundle, ',') .. ']')
    bundle, size = {}, 0
    return add(text, n)
  end
  for i = 1, #items do
    local it = items[i]
    if #it <= MAX_ELEMENT and string.find(it, '^%s*{[^{}%[%]]*}%s*$') then
      if #bundle >= MAX_EVENTS or size + #it > MAX_CHARS then
        if not flush() then break end
      end
      bundle[#bundle + 1] = it
      size = size + #it + 1
    elseif not flush() or not add(it, 1) then
      break
    end
  end
  if not blocked then flush() end
  if moved > 0 then redis.call('LTRIM', inbox, moved, -1) end
  return moved, blocked
end
""".replace("MAX_ELEMENT", str(MAX_ENTRY_BYTES)).replace("MAX_EVENTS", str(MAX_EVENTS))
MOVE_INBOX = MOVE_INBOX.replace("MAX_CHARS", str(MAX_PACK_CHARS))

# KEYS: lease, events stream, inbox. ARGV: token, consumer, count (entries), start id ('>' or a
# pending id), last applied id, the most inbox elements to move. Before reading new entries
# ('>'), entries of ours still pending after the last applied id are handed over first: a read
# whose reply was lost delivered them, and a client that re-sent that read on its own (redis-py
# does after a connection error, the cluster pipeline one command at a time) would otherwise
# step over them. Then the inbox moves into the log (MOVE_INBOX) and the new entries are read.
# The move and its trim are one script, and only the lease holder moves.
FENCED_READ = (
    MOVE_INBOX
    + """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return redis.error_reply('FENCED lease lost') end
if ARGV[4] ~= '>' then
  local r = redis.call('XREADGROUP', 'GROUP', 'workers', ARGV[2], 'COUNT', ARGV[3],
                       'STREAMS', KEYS[2], ARGV[4])
  if not r then return {} end
  return r[1][2]
end
if ARGV[5] then
  local p = redis.call('XREADGROUP', 'GROUP', 'workers', ARGV[2], 'COUNT', ARGV[3],
                       'STREAMS', KEYS[2], ARGV[5])
  if p and #p[1][2] > 0 then return p[1][2] end
end
local _, blocked = move_inbox(KEYS[2], KEYS[3], tonumber(ARGV[6] or ARGV[3]))
local r = redis.call('XREADGROUP', 'GROUP', 'workers', ARGV[2], 'COUNT', ARGV[3],
                     'STREAMS', KEYS[2], '>')
if r and #r[1][2] > 0 then return r[1][2] end
if blocked then return redis.error_reply('BLOCKED ' .. blocked) end
return {}
"""
)

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
"""

# Raise the shard's "effects written up to" mark to ARGV[1] (an entry id); never lower it.
# Queued before a batch's effects on the same connection, so Redis runs it first: an entry
# above the mark has had none of its effects written by anyone.
MARK_WRITTEN = """
local cur = redis.call('GET', KEYS[1])
if cur then
  local a, b = string.match(cur, '^(%d+)-(%d+)$')
  local c, d = string.match(ARGV[1], '^(%d+)-(%d+)$')
  a, b, c, d = tonumber(a), tonumber(b), tonumber(c), tonumber(d)
  if a > c or (a == c and b >= d) then return 0 end
end
redis.call('SET', KEYS[1], ARGV[1])
return 1
"""

# Heartbeat with Redis' clock (no skew between hosts) and prune the dead; return Redis' time
# (ms) and the live members with their expiry times (ms): {now, {member, expiry, ...}}.
HEARTBEAT = """#!lua flags=allow-oom
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if ARGV[1] ~= '' then redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1]) end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
return {now, redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')}
"""


# Retention: trim the shard's streams, fenced by the lease. KEYS: lease, events, outcomes, dlq,
# snapshot, trim base, archived-marks hash. ARGV: token, the last entry id of the snapshot this
# owner just saved, that snapshot's wall time (ms), the retention window (ms), '1' when trimming
# must wait for the archive. Returns -1 when the lease is not ours, else {events, outcomes,
# dlq} entries removed.
#
# Events go only below the snapshot (MINID keeps the snapshot's own entry and all after it),
# below the window and at or below the archived mark: takeover replays from the snapshot,
# dedup lives in the snapshot's watermarks, so no reader of the stream needs what goes. Before
# the first removal the snapshot is copied to the trim base, the state `verify` folds from.
# Outcomes and dead letters go below the window and the snapshot's time, and the last record
# always stays: APPEND_ONCE reads its seq. allow-oom: trimming is what frees memory, so it must
# run when Redis is full (the COPY of the base is the only write that can grow it).
RETAIN = """#!lua flags=allow-oom
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
local function less(x, y)
  local a, b = string.match(x, '^(%d+)-(%d+)$')
  local c, d = string.match(y, '^(%d+)-(%d+)$')
  a, b, c, d = tonumber(a), tonumber(b), tonumber(c), tonumber(d)
  return a < c or (a == c and b < d)
end
local function lower(x, y) if less(x, y) then return x end return y end
local function bound(field, limit)
  local mark = redis.call('HGET', KEYS[7], field)
  if mark then return lower(limit, mark) end
  if ARGV[5] == '1' then return '0-0' end
  return limit
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local cutoff = math.max(0, now - tonumber(ARGV[4])) .. '-0'
local removed = {0, 0, 0}
local ev = bound('events', lower(ARGV[2], cutoff))
local first = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', 1)
if #first > 0 and less(first[1][1], ev) then
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
    if less(f[1][1], b) then removed[i + 1] = redis.call('XTRIM', key, 'MINID', b) end
  end
end
return removed
"""


def is_fenced(reply: object) -> bool:
    """Whether a ``FENCED_READ`` reply (taken from a pipeline with ``raise_on_error=False``)
    is its refusal: an error reply whose code is ``FENCED``."""
    return isinstance(reply, ResponseError) and str(reply).partition(" ")[0] == FENCED


def is_blocked(reply: object) -> bool:
    """Whether a ``FENCED_READ`` reply says the shard's log takes no new entries."""
    return isinstance(reply, ResponseError) and str(reply).partition(" ")[0] == BLOCKED


class LuaScript(Protocol):
    """How the code calls a script: ``script(keys=..., args=..., client=pipe_or_client)``."""

    def __call__(
        self,
        keys: Sequence[Any] | None = None,
        args: Iterable[Any] | None = None,
        client: Any = None,
    ) -> Any: ...


class EvalScript:
    """A script sent with its text (EVAL), for Redis Cluster.

    redis-py's cluster pipeline refuses EVALSHA, and a node that restarted or a replica just
    promoted may not have the script cached: EVAL needs neither. Redis still compiles each
    script once (it caches EVAL'd scripts by their SHA); only the text travels each time.
    """

    def __init__(self, client: redis.Redis, text: str) -> None:
        self.client = client
        self.script = text

    def __call__(
        self,
        keys: Sequence[Any] | None = None,
        args: Iterable[Any] | None = None,
        client: Any = None,
    ) -> Any:
        keys = list(keys or [])
        target = self.client if client is None else client
        return target.execute_command("EVAL", self.script, len(keys), *keys, *(args or []))


def load_script(r: redis.Redis, text: str) -> LuaScript:
    """A script callable on ``r`` (or a pipeline of it): EVALSHA with redis-py's registered
    scripts on a single Redis, EVAL with the text on a cluster (see ``EvalScript``)."""
    return EvalScript(r, text) if is_cluster(r) else r.register_script(text)


# KEYS: a shard's events stream, its inbox. ARGV: the most inbox elements to move, then entry
# texts, appended in order with server-made ids, after what producers left in the inbox (up to
# that many elements: a producer flooding an inbox must not make one script run for long) is
# moved into the log first (marked 'via inbox', as
# FENCED_READ moves it): an event a producer published before the one that caused these (a
# top-up before the order whose charge this is) stays before them in the log. One
# call per destination shard and batch instead of an XADD per emitted event: the saga's second
# hop costs the client one command per destination, not per order. Safe to repeat, like the
# XADDs it replaces: the receiver deduplicates by (source, seq). All or none when Redis is full
# (maxmemory): a script is refused at its first write when Redis was full as it started, and
# once it has written it runs to the end. Plain pipelined XADDs could see one refused and a
# later one accepted (memory freed in between); sent again, the refused one would land after a
# higher seq of the same source and the receiver would drop it as a duplicate.
XADD_MANY = (
    MOVE_INBOX
    + """
move_inbox(KEYS[1], KEYS[2], tonumber(ARGV[1]))
for i = 2, #ARGV do
  redis.call('XADD', KEYS[1], '*', 'event', ARGV[i])
end
return #ARGV - 1
"""
)


INBOX_MOVE_LIMIT = 1000
"""Most inbox elements ``XADD_MANY`` moves before appending a batch's emitted events."""


@dataclass(frozen=True)
class Scripts:
    acquire: LuaScript
    renew: LuaScript
    release: LuaScript
    save_snapshot: LuaScript
    fenced_read: LuaScript
    append_once: LuaScript
    mark_written: LuaScript
    heartbeat: LuaScript
    retain: LuaScript
    xadd_many: LuaScript

    @classmethod
    def register(cls, r: redis.Redis) -> Scripts:
        def load(text: str) -> LuaScript:
            return load_script(r, text)

        return cls(
            acquire=load(ACQUIRE),
            renew=load(RENEW),
            release=load(RELEASE),
            save_snapshot=load(SAVE_SNAPSHOT),
            fenced_read=load(FENCED_READ),
            append_once=load(APPEND_ONCE),
            mark_written=load(MARK_WRITTEN),
            heartbeat=load(HEARTBEAT),
            retain=load(RETAIN),
            xadd_many=load(XADD_MANY),
        )
