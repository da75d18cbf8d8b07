"""Shard I/O on one Redis: each step of a batch is one pipeline on the client's connection."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from redis.exceptions import NoScriptError

from eventfleet.store import wire
from eventfleet.worker.conn import Conn
from eventfleet.worker.owned import Owned
from eventfleet.worker.pipelines import failed
from eventfleet.worker.shardio import WRITTEN, ShardWrite, Status, ack_all, queue_read, queue_write


class SingleIO:
    """``ShardIO`` on one Redis."""

    behind = True

    def __init__(self, conn: Conn) -> None:
        self.conn = conn

    def reader(
        self, shards: list[Owned], args: list[dict[str, Any]], *, main: bool
    ) -> Callable[[], list[Any]]:
        """Every shard's fenced read in one pipeline."""
        conn = self.conn

        def read() -> list[Any]:
            pipe = conn.r.pipeline(transaction=False)
            for o, a in zip(shards, args, strict=True):
                queue_read(conn, pipe, o, a)
            return list(pipe.execute(raise_on_error=False))

        return read

    def failed_reads(
        self, shards: list[Owned], replies: list[Any]
    ) -> list[tuple[Owned, BaseException]]:
        """A read refused as a failure (Redis full) loses the whole pipeline's reply: every
        shard resyncs, and the failure is raised."""
        bad = next((rep for rep in replies if failed(rep)), None)
        if bad is None:
            return []
        for o in shards:
            o.resync_from_start()
        raise bad

    def write(self, batch: list[ShardWrite]) -> list[Status]:
        """The effects as one write (``store.wire``), which raises at a refused write (nothing
        is acked then); the acks in another once every effect is written.

        Scripts are sent by their SHA without first asking Redis whether it has them (redis-py's
        pipeline does, a round trip per batch): when Redis answers ``NOSCRIPT`` (it restarted,
        or its scripts were flushed), the scripts are loaded and the whole write is sent
        again, as a retry after a dropped connection sends it again. Every effect is written
        so that a second copy changes nothing: a model's values are absolute and never behind
        its ``_upto``, outcomes and dead letters are appended once, emitted events are
        dropped as duplicates by their destination."""
        conn = self.conn
        queue = wire.Queue()
        for w in batch:
            queue_write(conn, queue, w)
        replies = wire.exchange(conn.r.connection_pool, queue.commands)
        if any(isinstance(rep, NoScriptError) for rep in replies):
            conn.scripts.load(conn.r)
            replies = wire.exchange(conn.r.connection_pool, queue.commands)
        wire.raise_first_error(replies)
        ack_all(conn, batch)
        return [(WRITTEN, None)] * len(batch)

    def idle(self, shards: list[Owned], wait_s: float) -> None:
        """Block on the shard streams meanwhile: an event another shard emits (the saga's
        next step) wakes the worker at once. Inbox lists cannot be watched that way without
        taking from them, so the caller bounds ``wait_s``."""
        conn = self.conn
        streams: dict[Any, Any] = {conn.keys.events(o.name): o.state.last_id for o in shards}
        block = max(1, int(wait_s * 1000))
        conn.call(
            lambda: conn.r.xread(streams, count=1, block=block),
            "wait",
            time.monotonic() + conn.ttl,
        )
