"""One pass over a namespace in Redis: every shard's backlog, owner and dead letters.

A pass costs a fixed number of pipelined round trips, whatever the shard count: one for
the meta hash and the registered producer identities, one for the clock and the live
workers, then per chunk of ``CHUNK`` shards one pipeline of cheap commands per shard (XINFO
GROUPS, XPENDING summary, GET lease, GET epoch, an XRANGE of the dead-letter stream after the
last one counted, empty unless new ones came, LLEN of the shard's shared inbox, EXISTS of its
quarantine key, and per producer identity one LLEN of its own inbox plus one HGETALL of the
shard's dropped counts: ``producers.py``), one while an online reshard runs (its new shards'
seeds: ``reshard.py``), and one more only for the shards that need it (the
oldest undelivered entry of a shard with nothing pending, and LINDEX 1 of an inbox with
events waiting: the oldest of them, whose age the reader times from the first pass that saw
it there, since inbox events carry no time; ``eventfleet.store.lag``). Dead letters are counted
incrementally, by id: a pass reads only the dead letters added since the last, so retention
trimming the stream (``eventfleet.worker.retention``) lowers nothing.

Nothing here trusts what it reads: a key of the wrong type, a lease or epoch that does not
parse, a dead letter without a known reason make that shard ``unreadable`` (or the reason
``other``), never a failed pass.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import redis

from eventfleet.exporter.producers import ProducerReading, ProducerTally, split
from eventfleet.exporter.reshard import ReshardReading, read_reshard
from eventfleet.ledger.rules import DEAD_LETTER_REASONS
from eventfleet.store import ids, lag
from eventfleet.store.keys import GROUP, Keys
from eventfleet.store.namespace import counts_of

CHUNK = 256
"""Shards per pipeline: bounds one round trip's reply size and Redis's time on it."""
DEAD_LETTER_BATCH = 100
"""New dead letters read per shard per pass (each may carry up to 64 KiB of the raw entry);
more are counted by the following passes."""
UNDELIVERED_CAP = 10_000
"""When Redis cannot tell a group's lag (entries deleted from the stream), the undelivered
entries are counted by reading them, up to this many."""
OTHER_REASON = "other"


@dataclass(frozen=True)
class ShardReading:
    shard: str
    lag: int
    """Events not yet applied (``eventfleet.store.lag.unapplied``): waiting in the shard's inbox,
    not yet
    delivered to the group, or delivered and not acked."""
    lag_seconds: float
    """Age of the oldest event not yet applied (``eventfleet.store.lag.age_s``, by Redis's clock):
    a log
    entry's from its id; an inbox event's from the first pass that saw it at the inbox's
    front. 0 when caught up."""
    pending: int
    owned: bool
    epoch: int
    """The lease epoch last issued for the shard (the owner's while it is owned)."""
    dead_letters: int
    """Dead letters of the shard seen by this reader: those in the stream at its first pass,
    and every one added since."""
    dead_letters_by_reason: dict[str, int]
    inbox: int = 0
    """Events waiting in the shard's inboxes, the shared one and every identity's (part of
    ``lag``)."""
    quarantined: bool = False
    """A snapshot of the shard that did not decode is kept in ``NS:{f}:quarantine`` (a
    takeover put it there: ``worker/takeover.py``); an operator removes it once handled."""


@dataclass(frozen=True)
class Reading:
    shards: list[ShardReading]
    """Every shard of the published counts, and the new shards a running reshard has seeded."""
    unreadable: list[str]
    """Shards whose keys could not be read or parsed this pass (logged, no gauges)."""
    shard_count: int
    live_workers: int
    used_memory: int = 0
    """Redis' ``used_memory`` (bytes); on a cluster, that of the fullest master."""
    maxmemory: int = 0
    """Redis' ``maxmemory`` (bytes; 0: no limit) of the same node."""
    producers: list[ProducerReading] = field(default_factory=list)
    """``legacy`` (the shared inboxes), then the registered identities exported
    (``producers.MAX_SERIES`` at most, the fullest first)."""
    producers_registered: int = 0
    reshard: ReshardReading | None = field(default_factory=ReshardReading)
    """An online reshard's progress (``reshard.py``); None when its meta fields do not parse."""


@dataclass
class _Tally:
    """The dead letters of one shard counted so far, up to ``last_id``."""

    count: int = 0
    last_id: str = "0-0"
    by_reason: dict[str, int] = field(default_factory=dict)

    def add(self, entries: list[Any]) -> None:
        for entry_id, fields in entries:
            reason = _reason(fields)
            self.by_reason[reason] = self.by_reason.get(reason, 0) + 1
            self.count += 1
            self.last_id = ids.text(entry_id)


@dataclass
class _Raw:
    """One shard's replies from the first pipeline, checked."""

    shard: str
    undelivered: int | None
    delivered_id: str
    pending: int
    oldest_pending: str | None
    owned: bool
    epoch: int
    new_dead_letters: list[Any]
    inbox: int = 0
    """Events waiting in the shard's shared inbox (element 0, its head, not counted)."""
    own: int = 0
    """Events waiting in the identities' own inboxes of the shard."""
    front: str | None = None
    """The inbox whose oldest event is timed: the shared one, else the first identity's
    with events (a lower bound of the shard's oldest inbox event)."""
    quarantined: bool = False


class NamespaceReader:
    """Reads a namespace pass after pass; keeps the dead-letter tallies between passes."""

    def __init__(self, r: redis.Redis, keys: Keys) -> None:
        self._r = r
        self._keys = keys
        self._tallies: dict[str, _Tally] = {}
        self._fronts: dict[str, tuple[bytes, int]] = {}
        """Per shard with events in its inbox: a digest of the oldest one and the Redis time
        (ms) of the first pass that saw it at the inbox's front."""

    def read(self) -> Reading:
        """One pass. Raises on Redis errors and on a namespace that is missing or damaged."""
        pipe = self._r.pipeline(transaction=False)
        pipe.hgetall(self._keys.meta)
        pipe.hgetall(self._keys.producers)
        meta, registry = pipe.execute()
        counts = counts_of(meta, self._keys)
        tally = ProducerTally.of(registry, meta)
        now_s, now_us = self._r.time()
        now_ms = now_s * 1000 + now_us // 1000
        live: Any = self._r.zcount(self._keys.workers, f"({now_ms}", "+inf")
        reshard = read_reshard(self._r, self._keys, meta, now_ms, CHUNK)
        published = counts.all_shards()
        # a running reshard's seeded children are served before their counts are published:
        # workers take each over once its seed exists
        known = set(published)
        shards = published + [s for s in (reshard.seeded if reshard else ()) if s not in known]
        raws: list[_Raw] = []
        unreadable: list[str] = []
        for start in range(0, len(shards), CHUNK):
            chunk = shards[start : start + CHUNK]
            for shard, raw in zip(chunk, self._first(chunk, tally), strict=True):
                if raw is None:
                    unreadable.append(shard)
                else:
                    raws.append(raw)
        oldest = self._oldest_undelivered(raws)
        waiting = self._inbox_since(raws, now_ms)
        readings = []
        for raw in raws:
            undelivered, first_undelivered = oldest.get(raw.shard, (raw.undelivered or 0, None))
            oldest_id = raw.oldest_pending or first_undelivered
            log_ms = None if oldest_id is None else ids.millis(oldest_id)
            age = lag.age_s(now_ms, log_ms, waiting.get(raw.shard))
            dead = self._tally(raw.shard)
            dead.add(raw.new_dead_letters)
            readings.append(
                ShardReading(
                    shard=raw.shard,
                    lag=lag.unapplied(raw.inbox + raw.own, undelivered, raw.pending),
                    lag_seconds=age,
                    pending=raw.pending,
                    owned=raw.owned,
                    epoch=raw.epoch,
                    dead_letters=dead.count,
                    dead_letters_by_reason=dict(dead.by_reason),
                    inbox=raw.inbox + raw.own,
                    quarantined=raw.quarantined,
                )
            )
        used, limit = redis_memory(self._r)
        legacy = sum(raw.inbox for raw in raws)
        return Reading(
            readings,
            unreadable,
            len(published),
            int(live),
            used,
            limit,
            tally.readings(legacy),
            len(tally.names),
            reshard,
        )

    # ---- round trips ---------------------------------------------------------------------
    def _first(self, chunk: list[str], producers: ProducerTally) -> list[_Raw | None]:
        keys = self._keys
        pipe = self._r.pipeline(transaction=False)
        for s in chunk:
            pipe.xinfo_groups(keys.events(s))
            pipe.xpending(keys.events(s), GROUP)
            pipe.get(keys.lease(s))
            pipe.get(keys.epoch(s))
            after = f"({self._tally(s).last_id}"
            pipe.xrange(keys.dlq(s), after, "+", count=DEAD_LETTER_BATCH)
            pipe.llen(keys.inbox(s))
            pipe.exists(keys.quarantine(s))
            producers.queue(pipe, keys, s)
        replies: list[Any] = list(pipe.execute(raise_on_error=False))
        out = []
        for s, (own, theirs) in zip(
            chunk, split(replies, 7, producers.replies_per_shard()), strict=True
        ):
            waiting = producers.add(theirs)
            raw = _check(s, own)
            if raw is not None and waiting:
                raw.own = sum(waiting.values())
                if not raw.inbox:
                    raw.front = keys.inbox(s, min(waiting))
            out.append(raw)
        return out

    def _oldest_undelivered(self, raws: list[_Raw]) -> dict[str, tuple[int, str | None]]:
        """(undelivered count, oldest undelivered id) of the shards whose lag Redis could not
        tell, or whose oldest unapplied entry is an undelivered one (nothing pending)."""
        wanted = [
            raw
            for raw in raws
            if raw.undelivered is None or (raw.undelivered and raw.oldest_pending is None)
        ]
        out: dict[str, tuple[int, str | None]] = {}
        for start in range(0, len(wanted), CHUNK):
            chunk = wanted[start : start + CHUNK]
            pipe = self._r.pipeline(transaction=False)
            for raw in chunk:
                cap = UNDELIVERED_CAP if raw.undelivered is None else 1
                pipe.xrange(self._keys.events(raw.shard), f"({raw.delivered_id}", "+", count=cap)
            for raw, reply in zip(chunk, pipe.execute(raise_on_error=False), strict=True):
                entries = [] if isinstance(reply, Exception) else reply
                first = ids.text(entries[0][0]) if entries else None
                n = len(entries) if raw.undelivered is None else raw.undelivered
                out[raw.shard] = (n, first)
        return out

    def _inbox_since(self, raws: list[_Raw], now_ms: int) -> dict[str, int]:
        """For each shard with events in its inbox, since when (Redis ms) its oldest waiting
        event has been seen at the front: the time kept from an earlier pass when the front is
        the same event, else now. One LINDEX per such shard, none when every inbox is empty."""
        wanted = [raw for raw in raws if raw.inbox + raw.own > 0]
        seen = {raw.shard for raw in wanted}
        for shard in [s for s in self._fronts if s not in seen]:
            del self._fronts[shard]  # emptied (or unreadable this pass): start over
        out: dict[str, int] = {}
        for start in range(0, len(wanted), CHUNK):
            chunk = wanted[start : start + CHUNK]
            pipe = self._r.pipeline(transaction=False)
            for raw in chunk:
                pipe.lindex(raw.front or self._keys.inbox(raw.shard), 1)
            for raw, front in zip(chunk, pipe.execute(raise_on_error=False), strict=True):
                if not isinstance(front, bytes | str):
                    self._fronts.pop(raw.shard, None)
                    continue
                text = front.encode() if isinstance(front, str) else front
                digest = hashlib.blake2b(text, digest_size=16).digest()
                known = self._fronts.get(raw.shard)
                since = known[1] if known is not None and known[0] == digest else now_ms
                self._fronts[raw.shard] = (digest, since)
                out[raw.shard] = since
        return out

    def _tally(self, shard: str) -> _Tally:
        return self._tallies.setdefault(shard, _Tally())


def _check(shard: str, replies: list[Any]) -> _Raw | None:
    """One shard's seven replies, or None when any is an error or does not parse."""
    if any(isinstance(x, Exception) for x in replies):
        return None
    groups, pending, lease, epoch, dead, inbox, quarantined = replies
    try:
        group = next(g for g in groups if ids.text(g["name"]) == GROUP)
        lag = group.get("lag")
        return _Raw(
            shard=shard,
            undelivered=None if lag is None else int(lag),
            delivered_id=ids.text(group["last-delivered-id"]),
            pending=int(pending["pending"]),
            oldest_pending=ids.text(pending["min"]) if pending["pending"] else None,
            owned=lease is not None,
            epoch=int(epoch) if epoch is not None else 0,
            new_dead_letters=list(dead),
            inbox=max(0, int(inbox) - 1),
            quarantined=bool(quarantined),
        )
    except (StopIteration, KeyError, TypeError, ValueError):
        return None


def _reason(fields: Any) -> str:
    try:
        reason = ids.text(fields[b"reason"])
    except (KeyError, TypeError, UnicodeDecodeError):
        return OTHER_REASON
    return reason if reason in DEAD_LETTER_REASONS else OTHER_REASON


def redis_memory(r: redis.Redis) -> tuple[int, int]:
    """``used_memory`` and ``maxmemory`` from ``INFO memory``. redis-py's cluster client asks
    every master and answers per node: the fullest one (highest share of its limit) counts."""
    info: Any = r.info("memory")
    nodes = [info] if "used_memory" in info else list(info.values())
    pairs = [(int(n.get("used_memory", 0)), int(n.get("maxmemory", 0))) for n in nodes]
    return max(pairs, key=lambda p: (p[0] / p[1] if p[1] else 0.0, p[0]), default=(0, 0))
