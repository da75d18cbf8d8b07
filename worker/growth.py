"""The shards a worker may own while its namespace grows in place (docs/DESIGN-DECISIONS.md,
section 35), and whether its folds apply split markers.

Each ownership pass re-reads the shard list from ``NS:meta`` (one ``HGETALL``: a grown count,
or a reshard's recorded target, adds shards), and a shard born of a split (its index at or
above its family's count at ``init``) is not taken over before its seed, the snapshot its
parent's owner writes at the marker, exists: a child started from nothing would apply
forwarded entries to an empty state. With ``splits`` off (tests that want the behaviour from
before online resharding only) the shard list is the one read at start and none of this costs
a round trip.
"""

from __future__ import annotations

import time
from collections.abc import Container, Iterable
from typing import Any

from eventfleet.ledger.shards import ShardCounts, parse_shard
from eventfleet.store.connection import TRANSIENT
from eventfleet.store.namespace import counts_of
from eventfleet.worker.conn import Conn

SEED_POLL_S = 0.1
TARGET_POLL_S = 0.25
"""How often a worker asks whether a reshard recorded a new target since its last pass (one
``HGET``): its children are then looked for at once, not a pass later."""
"""How often a worker looks for the seeds of the children it is to own, while some are
missing (a reshard under way): it takes one at once instead of at its next ownership pass
(every third of the lease TTL: seconds in which the child's forwarded and direct events
wait)."""


class Growth:
    """``shards``: the namespace's shards as last read; ``init``: its counts at ``init``,
    which every fold starts with."""

    def __init__(self, conn: Conn, counts: ShardCounts) -> None:
        self.splits = True
        """Split markers in a shard's log apply and forwarded entries are stepped on their
        path (a marker that came through an inbox is still an ``unknown_type`` dead letter:
        only the admin appends one to a log). Off only in tests of the worker as it was."""
        self.init = counts
        self.shards = counts.all_shards()
        self.waiting: list[str] = []
        """Shards this worker is to own, born of a split, whose seed was missing at the last
        pass (``seed_appeared`` looks for them between passes)."""
        self.next_seed_check = float("inf")
        self.target: bytes | None = None
        """The reshard target recorded in meta as this worker's last pass read it."""
        self.next_target_check = time.monotonic() + TARGET_POLL_S
        self._conn = conn

    def current(self) -> list[str]:
        """The namespace's shards, re-read from ``NS:meta`` (with ``splits``; an ownership
        pass asks once), with those of a reshard's target as soon as it is recorded:
        a child is taken once seeded, before the counts are published (routers learn them
        only once every parent has split), so the keys its parent let go are served again
        from its read model at the next pass."""
        if self.splits:
            conn = self._conn
            meta: Any = conn.call(lambda: conn.r.hgetall(conn.keys.meta), "read_meta")
            counts = counts_of(meta, conn.keys)
            users, items = counts.users, counts.items
            target = meta.get(b"reshard_target")
            self.target = target
            if target:
                u, _, i = target.decode().partition(",")
                users, items = max(users, int(u)), max(items, int(i))
            self.shards = ShardCounts(users, items).all_shards()
        return self.shards

    def seeded(self, target: Iterable[str], owned: Container[str]) -> list[str]:
        """The shards of ``target`` not ``owned`` yet, in order, without those born of a
        split whose seed does not exist yet (one round trip, only when one of them was born
        so)."""
        wanted = [s for s in sorted(target) if s not in owned]
        born = [s for s in wanted if self.born(s)]
        self.waiting, self.next_seed_check = [], float("inf")
        if not born or not self.splits:
            return wanted
        got = self._seeds(born)
        missing = {s for s, n in zip(born, got, strict=True) if not n}
        if missing:
            self.waiting = sorted(missing)
            self.next_seed_check = time.monotonic() + SEED_POLL_S
        return [s for s in wanted if s not in missing]

    def seed_appeared(self) -> bool:
        """Whether the seed of a shard in ``waiting`` exists now (one round trip): the
        caller then runs its ownership pass at once, which takes it."""
        self.next_seed_check = time.monotonic() + SEED_POLL_S
        return any(self._seeds(self.waiting))

    def target_changed(self) -> bool:
        """Whether a reshard recorded another target since the last pass (one ``HGET``): the
        caller then runs its pass at once, which lists the target's shards and looks for the
        seeds of those it is to own. Without it, a worker whose pass fell just before a run
        recorded its target would take its children a whole pass later."""
        self.next_target_check = time.monotonic() + TARGET_POLL_S
        if not self.splits:
            return False
        conn = self._conn
        try:  # one attempt, no retry: a master failing over must not hold the loop up
            got: Any = conn.r.hget(conn.keys.meta, "reshard_target")
        except TRANSIENT:
            return False  # asked again in TARGET_POLL_S; the pass reads meta anyway
        return bool(got) and got != self.target

    def _seeds(self, shards: list[str]) -> list[Any]:
        """``EXISTS`` of each shard's snapshot, in order."""
        conn = self._conn
        keys = [conn.keys.snapshot(s) for s in shards]

        def queue(pipe: Any, i: int) -> None:
            pipe.exists(keys[i])

        got: list[Any] = conn.call(
            lambda: conn.per_shard(keys, queue, all_failed=False), "read_seeds"
        )
        return got

    def born(self, shard: str) -> bool:
        """Whether ``shard`` was born of a split (not there at ``init``)."""
        return born_of_split(shard, self.init)


def born_of_split(shard: str, init: ShardCounts) -> bool:
    """Whether ``shard`` was born of a split: its index is at or above its family's count at
    ``init``, so its state starts from the seed its parent's owner writes, never empty."""
    fam, index = parse_shard(shard)
    return index >= (init.users if fam == "u" else init.items)
