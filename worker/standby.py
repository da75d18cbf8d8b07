"""Warm standbys: a copy of a shard's state kept by the next worker(s) in rendezvous order, so
a takeover starts from it and replays at most the entries its owner had not yet acked.

For each shard, the workers ranked 2 to ``EVENTFLEET_STANDBYS + 1`` by rendezvous weight (the
ones that win it if its owner leaves) restore its snapshot once and then tail its log with
plain ``XRANGE`` reads: no consumer group, no writes, nothing the owner can notice. A standby
folds only entries its owner has acked (below the group's oldest pending entry, or up to its
last-delivered id when nothing is pending): an acked entry's effects are written (a batch is
acked only once every reply of its effects is a success: docs/DESIGN-DECISIONS.md, section
28), so starting a takeover from the warm copy loses nothing, and the takeover replays and
re-emits the rest as usual (``eventfleet.worker.takeover``).

The shards stood by for follow the namespace's growth (``retarget`` gets the ownership pass's
shard list, ``eventfleet.worker.growth``), and a shard born of a split is stood by only once
its seed exists: a copy started empty would fold the forwarded entries onto nothing, and a
takeover would start from it instead of the seed.

Memory: one extra ``ShardState`` per shard a worker stands by for, the size of its owner's
copy (with one standby and N workers, about 1/N of the fleet's state per worker). A standby
that falls behind (a slow worker, a burst) reads ``EVENTFLEET_BATCH_SIZE`` entries per shard
per tail, and a takeover from it replays more; entries removed below its position (retention,
``XDEL``) make it restore the snapshot again. Snapshots stay the recovery path for everyone
else, and a standby never writes anything.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import structlog

from eventfleet.ledger.bundle import MAX_EVENTS, events_per_entry, read_count
from eventfleet.ledger.shards import ShardCounts
from eventfleet.ledger.state import ShardState
from eventfleet.store import ids
from eventfleet.store.connection import TRANSIENT
from eventfleet.store.fold import fold_entry
from eventfleet.store.keys import flat_entry_event, flat_entry_fwd
from eventfleet.store.settings import Settings
from eventfleet.store.shardreads import load_snapshot
from eventfleet.worker.assignment import targets, weight
from eventfleet.worker.conn import Conn
from eventfleet.worker.growth import born_of_split

log = structlog.get_logger("eventfleet.standby")

TAIL_S = 0.05
"""How often a worker tails the shards it stands by for."""
RESTORE_BUDGET_S = 0.05
"""Snapshots restored per tail: until this much time is spent (one while busy)."""
TAIL_BUSY_S = 0.5
BUSY_SHARE = 4
"""While its own shards have a backlog, a worker tails every ``TAIL_BUSY_S`` and reads a
``BUSY_SHARE``th of a batch per shard: its own work first; the standby catches up later."""


def standby_shards(shards: Iterable[str], members: Iterable[str], me: str, k: int) -> set[str]:
    """The shards ``me`` stands by for: those where it ranks 2nd to (k+1)th by rendezvous
    weight among ``members`` (the 1st owns it; ties broken as ``assignment.assign`` does)."""
    live = sorted(set(members))
    if k <= 0 or me not in live or len(live) < 2:
        return set()
    out = set()
    for s in shards:
        ranked = sorted(live, key=lambda m: (weight(m, s), m), reverse=True)
        if me in ranked[1 : k + 1]:
            out.add(s)
    return out


class Standbys:
    """The warm copies this worker keeps. ``retarget`` after each ownership pass, ``tail``
    when ``next_tail`` is due, ``take`` on a takeover, ``adopt`` on a hand-over."""

    def __init__(self, settings: Settings, conn: Conn, counts: ShardCounts) -> None:
        self._k = settings.standbys
        self._wid = settings.worker_id
        self._batch = settings.batch_size
        self._per_entry: dict[str, int] = {}
        self._conn = conn
        self._counts = counts
        self._all = counts.all_shards()
        self._wanted: set[str] = set()
        self._unseeded: set[str] = set()
        """Born of a split, wanted, and found without a seed since the last ``retarget``."""
        self._warm: dict[str, ShardState] = {}
        self.splits = True
        """Fold as the owner does: split markers apply, forwarded entries on their path
        (``eventfleet.worker.growth``)."""
        self._deleted: dict[str, str] = {}
        self.next_tail = 0.0 if self._k else float("inf")

    @property
    def shards(self) -> list[str]:
        """The shards with a warm copy now."""
        return sorted(self._warm)

    def retarget(
        self, members: list[str], owned: Iterable[str], shards: Iterable[str] | None = None
    ) -> None:
        """Stand by for the shards this worker ranks next for, except those it owns.
        ``shards``: the namespace's shards as the ownership pass read them (a growth adds
        some; None: as before). A shard born of a split found without its seed is looked
        at again after the next call, not at every tail."""
        if not self._k:
            return
        if shards is not None:
            self._all = list(shards)
        self._unseeded.clear()
        held = set(owned)
        self._wanted = standby_shards(self._all, members, self._wid, self._k) - held
        # A copy of a shard this worker is to own now but does not hold yet stays until its
        # takeover takes it: when the owner leaves, the members change at once, while its
        # lease goes only once its hand-over is done (or lapses), a pass or more later.
        coming = targets(self._all, members, self._wid) - held
        for s in [s for s in self._warm if s not in self._wanted and s not in coming]:
            self._drop(s)

    def take(self, shard: str) -> ShardState | None:
        """Hand the warm copy of ``shard`` to its takeover (None when there is none)."""
        self._deleted.pop(shard, None)
        return self._warm.pop(shard, None)

    def adopt(self, shard: str, state: ShardState) -> None:
        """After handing ``shard`` over (its final snapshot written), keep the state as the
        warm copy if this worker stands by for it."""
        if self._k and shard in self._wanted and shard not in self._warm:
            self._warm[shard] = state

    def _count(self, shard: str, events: int) -> int:
        """Entries to read for about ``events`` events (at first as if all were full bundles)."""
        return read_count(events, self._per_entry.get(shard, MAX_EVENTS))

    def _drop(self, shard: str) -> None:
        self._warm.pop(shard, None)
        self._deleted.pop(shard, None)

    # ---- tailing ---------------------------------------------------------------------
    def tail(self, busy: bool = False) -> int:
        """Restore new warm copies (``RESTORE_BUDGET_S``), then read every warm shard's acked
        entries in one pipeline and fold them. Returns how many entries were folded. ``busy``: this
        worker's own shards have a backlog (see ``TAIL_BUSY_S``)."""
        self.next_tail = time.monotonic() + (TAIL_BUSY_S if busy else TAIL_S)
        budget = max(1, self._batch // BUSY_SHARE) if busy else self._batch  # events per shard
        t0 = time.monotonic()
        for s in sorted(self._wanted - set(self._warm) - self._unseeded):
            self._restore(s)
            if busy or time.monotonic() - t0 >= RESTORE_BUDGET_S:
                break  # the rest at the next tails
        shards = sorted(self._warm)
        if not shards:
            return 0
        conn = self._conn

        def go() -> list[Any]:
            pipe = conn.r.pipeline(transaction=False)
            for s in shards:
                conn.scripts.tail(
                    pipe,
                    events=conn.keys.events(s),
                    poison=conn.keys.poison(s),
                    after=self._warm[s].last_id,
                    count=self._count(s, budget),
                )
            return list(pipe.execute(raise_on_error=False))

        try:  # one attempt: a standby never holds up its worker's own work (no retries)
            replies = go()
        except TRANSIENT:
            return 0
        folded = 0
        for s, reply in zip(shards, replies, strict=True):
            if isinstance(reply, TRANSIENT):
                return folded  # a cluster node's error: the next tail tries again
            try:
                folded += self._fold(s, reply)
            except Exception as exc:  # a standby must never stop its worker
                self._drop(s)
                log.warning("standby_dropped", shard=s, error=f"{type(exc).__name__}: {exc}"[:300])
        return folded

    def _restore(self, shard: str) -> None:
        conn = self._conn
        try:
            state = load_snapshot(conn.r, conn.keys, shard)
        except TRANSIENT:
            return  # the next tail tries again
        except Exception as exc:  # an unreadable snapshot: the takeover will say so
            log.warning("standby_dropped", shard=shard, error=f"{type(exc).__name__}: {exc}"[:300])
            return
        if state is None and born_of_split(shard, self._counts):
            self._unseeded.add(shard)  # its parent has not split yet: no copy from nothing
            return
        self._warm[shard] = state if state is not None else ShardState(shard)
        log.info("standby_started", shard=shard, last_id=self._warm[shard].last_id)

    def _fold(self, shard: str, reply: Any) -> int:
        if isinstance(reply, Exception):
            raise reply
        if not reply:
            return 0  # no group yet
        entries, poison_raw, deleted_raw, first_raw = reply
        state = self._warm[shard]
        deleted, first = ids.text(deleted_raw), ids.text(first_raw)
        # Entries after our position are gone when the stream now starts after it (retention's
        # XTRIM, which Redis does not count in max-deleted-entry-id) or an XDEL removed one.
        # Checked on the first tail after a restore too: the owner may have written a newer
        # snapshot and trimmed up to it between our snapshot read and this tail.
        xdel = deleted != self._deleted.get(shard) and ids.after(deleted, state.last_id)
        if xdel or ids.after(first, state.last_id):
            # entries after our position were removed (retention or XDEL): a newer snapshot
            # covers what retention removed; start again from it
            self._drop(shard)
            self._restore(shard)
            self._deleted[shard] = deleted
            return 0
        self._deleted[shard] = deleted
        poison = {ids.text(p) for p in poison_raw}
        events = 0
        for eid_b, flat in entries:
            eid = ids.text(eid_b)
            raw, via_inbox, by = flat_entry_event(flat)
            if not self.splits:
                events += fold_entry(
                    state, eid, raw, via_inbox, self._counts, eid in poison, scope=by
                )
                continue
            fwd = flat_entry_fwd(flat) if state.splits else ""
            events += fold_entry(
                state, eid, raw, via_inbox, self._counts, eid in poison,
                scope=by, fwd=fwd, splits=True,
            )  # fmt: skip
        if entries:  # events per entry (bundles hold many): the next tail reads about a budget
            self._per_entry[shard] = events_per_entry(events, len(entries))
        return len(entries)
