"""A batch's fenced reads, through the worker's ``ShardIO``, with one read ahead while a
backlog lasts.

With a backlog (a full batch came back), the next read is sent before this batch is applied:
Redis prepares batch n+1 while this process applies batch n. The read-ahead starts after the
entries in hand (they will be applied by the time it is used), and it is used only if the
same shards are still held then. A read-ahead that is dropped leaves its entries pending for
us, and the next fenced read hands them back first (it starts with our own pending entries
after the last applied id). The read is prepared on the loop's thread (on a cluster, the
pipelines per master are grouped there: the cluster client's slot map, which a failure
refreshes, is only touched on that thread); the read-ahead thread only sends it.

A read whose reply is lost leaves entries in our pending list unseen: its shards resync.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from eventfleet.store import ids
from eventfleet.store.settings import Settings
from eventfleet.worker.conn import Conn
from eventfleet.worker.owned import Owned, earliest_deadline
from eventfleet.worker.shardio import ShardIO

SayFailing = Callable[[str, list[Owned], BaseException], None]


class Reads:
    """The fenced reads of the shards held, one read ahead at most."""

    def __init__(self, settings: Settings, conn: Conn, io: ShardIO, say: SayFailing) -> None:
        self._s = settings
        self._conn = conn
        self._io = io
        self._say = say
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="read-ahead")
        self._ahead: tuple[list[Owned], Future[list[Any]]] | None = None

    def read(self, shards: list[Owned]) -> list[Any]:
        """One reply per shard: its entries, an error reply, or the failure of its read (a
        cluster master that failed; the shard resyncs). Raises when no read went through."""
        replies = self._take_ahead(shards)
        if replies is None:
            replies = self._read_now(shards)
        bad = self._io.failed_reads(shards, replies)
        if bad:
            self._say("read", [o for o, _ in bad], bad[0][1])
        self._read_ahead(shards, replies)
        return replies

    def _args(self, o: Owned, applied_to: str) -> dict[str, Any]:
        batch = self._s.batch_size  # read: entries (bundles hold many); move: inbox events
        return {
            "token": o.token,
            "consumer": self._s.worker_id,
            "count": o.count(batch),
            "start": o.read_from,
            "applied_to": applied_to,
            "move_limit": batch,
        }

    def _read_now(self, shards: list[Owned]) -> list[Any]:
        args = [self._args(o, o.state.last_id) for o in shards]
        reader = self._io.reader(shards, args, main=True)

        def read() -> list[Any]:
            try:
                return reader()
            except BaseException:
                for o in shards:  # the reply is lost: entries may sit in our pending list
                    o.resync_from_start()
                raise

        replies: list[Any] = self._conn.call(read, "read", earliest_deadline(shards))
        return replies

    def _read_ahead(self, shards: list[Owned], replies: list[Any]) -> None:
        """With a full batch in hand, send the next read now (see the module docstring)."""
        batch = self._s.batch_size
        full = any(
            isinstance(r, list) and len(r) >= o.count(batch)
            for o, r in zip(shards, replies, strict=True)
        )
        if not full or any(o.resync for o in shards):
            return
        args = [
            self._args(o, ids.text(r[-1][0]) if isinstance(r, list) and r else o.state.last_id)
            for o, r in zip(shards, replies, strict=True)
        ]
        read = self._io.reader(shards, args, main=False)
        fut = self._pool.submit(self._conn.call, read, "read", earliest_deadline(shards))
        self._ahead = (shards, fut)

    def _take_ahead(self, shards: list[Owned]) -> list[Any] | None:
        """The read-ahead's replies if it covers exactly ``shards``, else None."""
        if self._ahead is None:
            return None
        ahead, fut = self._ahead
        self._ahead = None
        try:
            replies: list[Any] = fut.result()
        except BaseException:
            for o in ahead:  # the reply is lost: entries may sit in our pending list
                o.resync_from_start()
            raise
        same = len(ahead) == len(shards) and all(a is b for a, b in zip(ahead, shards, strict=True))
        return replies if same else None
