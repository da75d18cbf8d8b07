"""Per producer identity: the events waiting in its own inboxes and those the moves dropped.

Read in the same pipelines as the shards (``read.py``): per shard one ``LLEN`` of each
registered identity's own inbox and one ``HGETALL`` of the shard's dropped counts
(``NS:{f}:dropped``). The shared inbox of namespaces made before identities is ``legacy``
(its events are the shard's ``inbox``; nothing of it is dropped, bad elements there become
dead letters). The label set is bounded: registered identities only, and at most
``MAX_SERIES`` of them per pass, the fullest first (then the most dropped, then by name), plus
``legacy``; ``eventfleet_producers`` says how many are registered, so a dashboard can tell
when some were left out.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from eventfleet.store.keys import Keys
from eventfleet.store.producers import LEGACY, NAME, Bounds, moved_names

MAX_SERIES = 50
"""Identities exported per pass (plus ``legacy``): each costs three series."""


@dataclass(frozen=True)
class ProducerReading:
    name: str
    waiting: int
    """Events waiting in its inboxes, summed over the shards (each head not counted)."""
    fill: float
    """Its fullest shard inbox's events against the bound in events (0 for ``legacy``,
    which has none)."""
    dropped: int
    """Elements the moves dropped from its inboxes: past its bound, or not one event."""


@dataclass
class ProducerTally:
    """One pass's per-identity sums, fed shard by shard."""

    names: list[str]
    bounds: Bounds
    waiting: dict[str, int] = field(default_factory=dict)
    fullest: dict[str, int] = field(default_factory=dict)
    dropped: dict[str, int] = field(default_factory=dict)

    @classmethod
    def of(cls, registered: Any, meta: Any) -> ProducerTally:
        """From ``HGETALL`` of the registry and of meta; names that cannot be an identity's
        (written by hand) are left out."""
        names = sorted(n.decode() if isinstance(n, bytes) else str(n) for n in registered)
        return cls(moved_names([n for n in names if NAME.match(n)]), Bounds.of(meta))

    def replies_per_shard(self) -> int:
        return len(self.names) + 1

    def queue(self, pipe: Any, keys: Keys, shard: str) -> None:
        """The shard's commands: ``LLEN`` of each identity's inbox, ``HGETALL`` dropped."""
        for n in self.names:
            pipe.llen(keys.inbox(shard, n))
        pipe.hgetall(keys.dropped(shard))

    def add(self, replies: list[Any]) -> dict[str, int]:
        """One shard's replies (as queued); a reply that is an error or does not parse
        counts as nothing (a key of the wrong type costs that key only). Returns the events
        waiting in the shard's own inboxes, per identity that has some."""
        shard: dict[str, int] = {}
        for n, reply in zip(self.names, replies, strict=False):
            w = _int(reply) - 1
            if w > 0:
                shard[n] = w
                self.waiting[n] = self.waiting.get(n, 0) + w
                self.fullest[n] = max(self.fullest.get(n, 0), w)
        dropped = replies[-1] if replies else None
        if isinstance(dropped, dict):
            for k, v in dropped.items():
                name = k.decode() if isinstance(k, bytes) else str(k)
                if name in self.names:
                    self.dropped[name] = self.dropped.get(name, 0) + max(0, _int(v))
        return shard

    def readings(self, legacy_waiting: int) -> list[ProducerReading]:
        """``legacy`` first, then at most ``MAX_SERIES`` identities, the fullest first."""
        bound = max(1, self.bounds.events)
        rows = [
            ProducerReading(
                n,
                self.waiting.get(n, 0),
                self.fullest.get(n, 0) / bound,
                self.dropped.get(n, 0),
            )
            for n in self.names
        ]
        rows.sort(key=lambda p: (-p.fill, -p.dropped, p.name))
        return [ProducerReading(LEGACY, legacy_waiting, 0.0, 0), *rows[:MAX_SERIES]]


def _int(reply: Any) -> int:
    try:
        return int(reply)
    except (TypeError, ValueError):
        return 0


def split(replies: list[Any], fixed: int, extra: int) -> Iterator[tuple[list[Any], list[Any]]]:
    """Per shard, its ``fixed`` replies and its ``extra`` (producer) replies, in order."""
    step = fixed + extra
    for i in range(0, len(replies), step):
        yield replies[i : i + fixed], replies[i + fixed : i + step]
