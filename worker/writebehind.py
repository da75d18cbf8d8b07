"""Writing a batch's effects while the loop applies the next batch (single Redis).

The loop used to wait for each batch's write (emitted events, outcomes, acks) before it read
and applied the next one, so the worker sat idle for the write's round trip and for the time
Redis took to run it. Now the write goes to a thread of its own and the loop goes on; at most
one write is in flight, and it is waited for (``settle``) before:

- the next batch's write, so effects reach Redis in the order they were made (the seqs a
  destination receives from a source only grow);
- an ownership pass (``Ownership.maintain``: lease renewals, snapshots, hand-overs, takeovers),
  so no snapshot covers a batch whose effects may not be written, and no lease is released
  with a write still running;
- an idle wait and the final drain.

When a write fails, the state in memory is ahead of Redis for its shards, and for the shards
of the batch applied on top of it: ``settle`` loses all of them (the next owner replays from
the last snapshot) and raises, exactly as a failed write did before. Nothing about what is
written changes, only when the loop waits for it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor

from store.connection import TRANSIENT
from worker.conn import Conn
from worker.owned import Owned

LOST = "effects could not be written before the lease deadline"


class WriteBehind:
    """At most one batch's effects in flight, written by a thread while the loop goes on."""

    def __init__(self, conn: Conn, lose: Callable[[Owned, str], None]) -> None:
        self._conn = conn
        self._lose = lose
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="write-behind")
        self._inflight: tuple[list[Owned], Future[None]] | None = None

    def send(self, shards: list[Owned], write: Callable[[], None], deadline: float) -> None:
        """Start ``write`` (the batch of ``shards``), retried until ``deadline`` like any call;
        the write before it must be settled."""
        assert self._inflight is None, "settle the write in flight first"
        fut = self._pool.submit(self._conn.call, write, "write_effects", deadline)
        self._inflight = (shards, fut)

    def settle(self, also: Iterable[Owned] = ()) -> None:
        """Wait for the write in flight. When it failed, its shards and ``also`` (shards with a
        newer batch applied on top of it) are lost, and the error is raised."""
        if self._inflight is None:
            return
        shards, fut = self._inflight
        self._inflight = None
        try:
            fut.result()
        except TRANSIENT:
            for o in [*shards, *also]:
                self._lose(o, LOST)
            raise

    def settle_quietly(self) -> None:
        """``settle``, its failure already handled (shards lost): for paths that go on anyway."""
        with contextlib.suppress(*TRANSIENT):
            self.settle()
