"""What ``eventfleet up`` watches: shard status sampled from Redis, order outcomes read as
they arrive, and the workers' JSON log lines tailed for hand-overs, take-overs, lease losses
and dead letters. Read-only: nothing here writes to Redis or signals a process."""

from __future__ import annotations

import json
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from eventfleet.ledger.codec import decode_outcome
from eventfleet.ledger.shards import ShardCounts
from eventfleet.ops.status import ShardStatus, shard_status
from eventfleet.store import ids
from eventfleet.store.keys import Keys

RATE_WINDOW_S = 3.0
OUTCOME_CHUNK = 10_000
OUTCOME_KINDS = ("confirmed", "out_of_stock", "unknown_item", "insufficient_funds")


def outcome_kind(status: str, reason: str | None) -> str:
    """``confirmed`` or the rejection reason: the four ways an order can end."""
    return "confirmed" if status == "confirmed" else (reason or "rejected")


def applied_of(row: ShardStatus) -> int | None:
    """Entries of a shard read by the group and acked: length - undelivered - pending."""
    if row.undelivered is None:
        return None
    return row.length - row.undelivered - row.pending


@dataclass
class Sample:
    at: float
    rows: list[ShardStatus]
    rates: dict[str, float]
    """Entries applied per second per shard, over the last few seconds."""
    dead_letters: int

    @property
    def idle(self) -> bool:
        return all(r.idle for r in self.rows)

    @property
    def entries(self) -> int:
        return sum(r.length for r in self.rows)

    @property
    def applied(self) -> int:
        return sum(applied_of(r) or 0 for r in self.rows)

    @property
    def lag(self) -> int:
        return sum(r.lag or 0 for r in self.rows)

    @property
    def pending(self) -> int:
        return sum(r.pending for r in self.rows)

    @property
    def rate(self) -> float:
        return sum(self.rates.values())

    def owners(self) -> Counter[str]:
        return Counter(r.owner for r in self.rows if r.owner)


class Sampler:
    """Samples shard status and reads new order outcomes incrementally (one cursor a shard)."""

    def __init__(self, r: redis.Redis, keys: Keys, counts: ShardCounts) -> None:
        self.r = r
        self.keys = keys
        self.counts = counts
        self.outcomes: Counter[str] = Counter()
        self._cursor = {f"u{n}": "0-0" for n in range(counts.users)}
        self._history: deque[tuple[float, dict[str, int]]] = deque()
        self.last: Sample | None = None

    def sample(self) -> Sample:
        rows = shard_status(self.r, self.keys, self.counts)
        now = time.monotonic()
        done = {r.shard: n for r in rows if (n := applied_of(r)) is not None}
        self._history.append((now, done))
        while len(self._history) > 2 and now - self._history[1][0] >= RATE_WINDOW_S:
            self._history.popleft()
        then, before = self._history[0]
        span = now - then
        rates = {
            s: max(0, n - before.get(s, n)) / span if span > 0 else 0.0 for s, n in done.items()
        }
        self._read_outcomes()
        pipe = self.r.pipeline(transaction=False)
        for s in self.counts.all_shards():
            pipe.xlen(self.keys.dlq(s))
        dead = sum(int(n) for n in pipe.execute())
        self.last = Sample(time.time(), rows, rates, dead)
        return self.last

    def _read_outcomes(self) -> None:
        while True:
            shards = list(self._cursor)
            pipe = self.r.pipeline(transaction=False)
            for s in shards:
                pipe.xrange(
                    self.keys.outcomes(s), min=f"({self._cursor[s]}", max="+", count=OUTCOME_CHUNK
                )
            full = False
            for s, batch in zip(shards, pipe.execute(), strict=True):
                for _eid, fields in batch:
                    o = decode_outcome(fields[b"outcome"])
                    self.outcomes[outcome_kind(o.status, o.reason)] += 1
                if batch:
                    self._cursor[s] = ids.text(batch[-1][0])
                full = full or len(batch) == OUTCOME_CHUNK
            if not full:
                return

    @property
    def settled(self) -> int:
        """Orders with an outcome so far."""
        return sum(self.outcomes.values())


@dataclass(frozen=True)
class LogEvent:
    """One line of the rolling log. ``kind`` is a bounded label, counted by ``LogTail``."""

    at: float
    who: str
    kind: str
    text: str


def kind_of(rec: dict[str, Any]) -> str | None:
    """The bounded kind of a worker's log record worth a count or a line; None for the rest."""
    ev = rec.get("event")
    if ev == "lease_acquired":
        return "acquired" if int(rec.get("epoch", 1)) <= 1 else "takeover"
    return KINDS.get(str(ev))


KINDS = {
    "handed_over": "handover",
    "lease_lost": "lease_lost",
    "dead_letter": "dead_letter",
    "snapshot_written": "snapshot",
    "fatal": "fatal",
    "drain_deadline_passed": "fatal",
    "hard_stop": "fatal",
    "draining": "draining",
}
SILENT = frozenset({"acquired", "snapshot"})
"""Counted, not shown: a shard's first owner, and every snapshot."""
PER_SHARD = {"takeover": "took over", "handover": "handed over", "lease_lost": "lost"}
"""Kinds that come in bursts, one record a shard: one line a burst."""


def describe(kind: str, recs: list[dict[str, Any]]) -> str:
    """One line for records of one kind from one worker (several only for ``PER_SHARD``)."""
    first = recs[0]
    if kind in PER_SHARD:
        shards = ", ".join(str(r.get("shard", "?")) for r in recs)
        text = f"{PER_SHARD[kind]} {shards}"
        if kind == "takeover":
            restored = sum(1 for r in recs if r.get("restored"))
            ms = max(float(r.get("seconds", 0.0)) for r in recs) * 1000
            text += (
                f" ({restored} from a snapshot, replayed {sum(r.get('replayed', 0) for r in recs)}"
                f", claimed {sum(r.get('claimed', 0) for r in recs)}, slowest {ms:.0f} ms)"
            )
        elif kind == "lease_lost":
            text += ": " + "; ".join(sorted({str(r.get("reason", "")) for r in recs}))
        return text
    if kind == "dead_letter":
        return (
            f"dead letter on {first.get('shard')} {first.get('entry_id')}: "
            f"{first.get('reason')} ({str(first.get('error', ''))[:60]})"
        )
    if kind == "draining":
        return f"draining ({first.get('signal')})"
    return f"{first.get('event')}: {first.get('error', first.get('signal', ''))}"


@dataclass
class _Followed:
    who: str
    offset: int = 0
    partial: bytes = b""


@dataclass
class LogTail:
    """Follows JSON-lines log files; keeps a rolling log and a count per kind."""

    keep: int = 200
    lines: deque[LogEvent] = field(default_factory=deque)
    counts: Counter[str] = field(default_factory=Counter)
    _files: dict[Path, _Followed] = field(default_factory=dict)

    def follow(self, path: Path, who: str) -> None:
        self._files.setdefault(path, _Followed(who))

    def note(self, who: str, kind: str, text: str) -> None:
        """Add a line of our own (a fault injected, a process that exited)."""
        self.lines.append(LogEvent(time.time(), who, kind, text))
        while len(self.lines) > self.keep:
            self.lines.popleft()

    def poll(self) -> None:
        for path, f in self._files.items():
            try:
                with open(path, "rb") as fh:
                    fh.seek(f.offset)
                    data = fh.read()
            except FileNotFoundError:
                continue
            f.offset += len(data)
            *complete, f.partial = (f.partial + data).split(b"\n")
            self._lines(f.who, complete)

    def _lines(self, who: str, lines: list[bytes]) -> None:
        burst: dict[str, list[dict[str, Any]]] = {}
        for line in lines:
            raw = line.decode("utf-8", "replace").rstrip()
            if not raw.strip():
                continue
            try:
                rec = json.loads(raw)
            except ValueError:
                rec = None
            if not isinstance(rec, dict):
                if not raw[0].isspace():  # a traceback's headline, not every frame
                    self.note(who, "output", raw[:120])
                continue
            kind = kind_of(rec)
            if kind is None:
                continue
            self.counts[kind] += 1
            if kind in PER_SHARD:
                burst.setdefault(kind, []).append(rec)
            elif kind not in SILENT:
                self.note(who, kind, describe(kind, [rec]))
        for kind, recs in burst.items():
            self.note(who, kind, describe(kind, recs))

    def recent(self, n: int) -> list[LogEvent]:
        return list(self.lines)[-n:] if n > 0 else []
