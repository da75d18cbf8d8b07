"""Shard I/O on Redis Cluster: one pipeline per master (``eventfleet.worker.pipelines``), so a
master
that fails fails only its own shards; the others' batches go through."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, cast

from eventfleet.worker.conn import Conn
from eventfleet.worker.owned import Owned
from eventfleet.worker.pipelines import PerMaster, failed, transient, write_rounds
from eventfleet.worker.shardio import ShardWrite, Status, queue_ack, queue_read, queue_write


class ClusterIO:
    """``ShardIO`` on Redis Cluster."""

    behind = False  # a write's status per shard is handled before the loop goes on

    def __init__(self, conn: Conn) -> None:
        assert conn.masters is not None, "a cluster client"
        self.conn = conn
        self.masters: PerMaster = conn.masters

    def reader(
        self, shards: list[Owned], args: list[dict[str, Any]], *, main: bool
    ) -> Callable[[], list[Any]]:
        """One pipeline per master, grouped now (the slot map is read on this thread); a
        shard whose master failed gets the error as its reply. ``main``: what failed is sent
        once more through the cluster client (redirections, a refreshed slot map); the
        read-ahead thread only sends, on the masters' own clients."""
        conn, masters = self.conn, self.masters

        def queue(pipe: Any, i: int) -> None:
            queue_read(conn, pipe, shards[i], args[i])

        plan = masters.plan([conn.keys.events(o.name) for o in shards])

        def read_per_master() -> list[Any]:
            out = masters.execute(plan, len(shards), queue)
            if main:
                masters.retry_failed(out, queue)
            return [r[0] if isinstance(r, list) else r for r in out]

        return read_per_master

    def failed_reads(
        self, shards: list[Owned], replies: list[Any]
    ) -> list[tuple[Owned, BaseException]]:
        """Only the shards whose master failed (or whose slot moved) resync; raises when no
        shard's read went through."""
        bad = [(o, rep) for o, rep in zip(shards, replies, strict=True) if failed(rep)]
        for o, _ in bad:
            o.resync_from_start()
        if bad and len(bad) == len(shards):
            raise transient(bad[0][1])
        return bad

    def write(self, batch: list[ShardWrite]) -> list[Status]:
        """``write_rounds``: each shard's own master's effects, then the emits to other
        masters, then the acks of the shards whose effects are all written."""
        conn = self.conn

        def queue_one(pipe: Any, i: int) -> None:  # write_rounds sends the ack on its own
            queue_write(conn, pipe, batch[i])
            queue_ack(conn, pipe, batch[i])

        homes = [conn.keys.events(w.o.name) for w in batch]
        status = write_rounds(self.masters, homes, queue_one)
        if all(err is not None for _, err in status):
            raise transient(cast(BaseException, status[0][1]))  # none went through
        return status

    def idle(self, shards: list[Owned], wait_s: float) -> None:
        """XREAD over several streams needs them in one slot, and every shard has a slot of
        its own: sleep instead."""
        time.sleep(wait_s)
