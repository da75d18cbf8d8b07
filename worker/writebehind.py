"""How the loop waits for a batch's write: ``Waited`` (each write before the loop goes on) or
``WriteBehind`` (the write runs while the loop applies the next batch). Both wrap the
worker's ``ShardIO`` and have the same face: ``write(batch)``, ``settle()``.

``WriteBehind`` serves one Redis without ``EVENTFLEET_WAIT_REPLICAS``: the write goes to a
thread of its own and the loop goes on, so the worker is not idle for the write's round trip
and for the time Redis takes to run it. At most one write is in flight, and it is waited for
(``settle``) before:

- the next batch's write, so effects reach Redis in the order they were made (the seqs a
  destination receives from a source only grow);
- an ownership pass (``Ownership.maintain``: lease renewals, snapshots, hand-overs, takeovers),
  so no snapshot covers a batch whose effects may not be written, and no lease is released
  with a write still running;
- an idle wait and the final drain.

When a write fails, the state in memory is ahead of Redis for its shards, and for the shards
of the batch applied on top of it: ``settle`` loses all of them (the next owner replays from
the last snapshot) and raises, as ``Waited`` does at once. What is written is the same either
way; only when the loop waits for it differs.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor

from eventfleet.store.connection import TRANSIENT
from eventfleet.worker.conn import Conn
from eventfleet.worker.owned import Owned, earliest_deadline
from eventfleet.worker.shardio import ShardIO, ShardWrite, Status

LOST = "effects could not be written before the lease deadline"

Lose = Callable[[Owned, str], None]
OnStatus = Callable[[list[ShardWrite], list[Status]], None]
"""What to do with a written batch's status per shard (some may have failed on a cluster)."""


class Waited:
    """Each batch's write waited for, retried until the first of its leases' deadlines."""

    def __init__(self, io: ShardIO, conn: Conn, lose: Lose, on_status: OnStatus) -> None:
        self._io = io
        self._conn = conn
        self._lose = lose
        self._on_status = on_status

    def write(self, batch: list[ShardWrite]) -> None:
        deadline = earliest_deadline(w.o for w in batch)
        try:
            status = self._conn.call(
                functools.partial(self._io.write, batch), "write_effects", deadline
            )
        except TRANSIENT:
            # The state in memory is ahead of what Redis holds: it must not be used again.
            for w in batch:
                self._lose(w.o, LOST)
            raise
        self._on_status(batch, status)

    def settle(self, also: Iterable[Owned] = ()) -> None:
        """Nothing is ever in flight."""

    def settle_quietly(self) -> None:
        """Nothing is ever in flight."""


class WriteBehind:
    """At most one batch's effects in flight, written by a thread while the loop goes on."""

    def __init__(self, io: ShardIO, conn: Conn, lose: Lose, on_status: OnStatus) -> None:
        self._io = io
        self._conn = conn
        self._lose = lose
        self._on_status = on_status
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="write-behind")
        self._inflight: tuple[list[ShardWrite], Future[list[Status]]] | None = None

    def write(self, batch: list[ShardWrite]) -> None:
        """Settle the write in flight (raises, its shards and this batch's lost, if it
        failed), then start this batch's, retried until its leases' deadline like any call."""
        shards = [w.o for w in batch]
        deadline = earliest_deadline(shards)
        self.settle(also=shards)
        call = functools.partial(self._io.write, batch)
        fut = self._pool.submit(self._conn.call, call, "write_effects", deadline)
        self._inflight = (batch, fut)

    def settle(self, also: Iterable[Owned] = ()) -> None:
        """Wait for the write in flight. When it failed, its shards and ``also`` (shards with a
        newer batch applied on top of it) are lost, and the error is raised."""
        if self._inflight is None:
            return
        batch, fut = self._inflight
        self._inflight = None
        try:
            status = fut.result()
        except TRANSIENT:
            for o in [*(w.o for w in batch), *also]:
                self._lose(o, LOST)
            raise
        self._on_status(batch, status)

    def settle_quietly(self) -> None:
        """``settle``, its failure already handled (shards lost): for paths that go on anyway."""
        with contextlib.suppress(*TRANSIENT):
            self.settle()
