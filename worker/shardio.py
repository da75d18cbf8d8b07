"""One shard I/O interface for the loop: a batch's fenced reads and its writes.

``ShardIO`` is what ``eventfleet.worker.loop`` reads and writes through; the worker picks the
implementation once, when it starts (``eventfleet.worker.loop.open_io``), so the loop itself never
asks
whether Redis is one server or a cluster:

- ``eventfleet.worker.singleio.SingleIO``: one Redis. A batch's reads are one pipeline, its effects
one
  pipeline and its acks another, sent only once every effect reply is a success;
- ``eventfleet.worker.clusterio.ClusterIO``: Redis Cluster, one pipeline per master; a master that
fails
  fails only its own shards (a status per shard);
- ``Replicated`` wraps either when ``EVENTFLEET_WAIT_REPLICAS`` is set: effects count as
  written once that many replicas have them (``WAIT``), then the acks go.

How the loop waits for a write follows from it (``ShardIO.behind``,
``eventfleet.worker.writebehind``): on
one Redis without ``WAIT`` the write runs behind the next batch's apply; otherwise each write
is waited for.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from eventfleet.store import wire
from eventfleet.store.replication import write_replicated
from eventfleet.worker.conn import Conn
from eventfleet.worker.effects import Effects, queue_acks, queue_effects
from eventfleet.worker.owned import Owned
from eventfleet.worker.pipelines import LOST, UNACKED, WRITTEN

Status = tuple[str, BaseException | None]
"""A shard's write: ``WRITTEN``, ``LOST`` (some effect may not be written) or ``UNACKED``
(every effect written, the ack not), with the error that stopped it."""

__all__ = ["LOST", "UNACKED", "WRITTEN", "Replicated", "ShardIO", "ShardWrite", "Status"]


@dataclass(slots=True)
class ShardWrite:
    """What one shard's applied batch writes: its effects, then the ack of its entries."""

    o: Owned
    effects: Effects
    acks: list[bytes]
    upto: str
    """The last entry id the effects cover (the shard's applied id when the batch was made:
    the loop moves on while a write runs behind it)."""


class ShardIO(Protocol):
    """Fenced reads and effect writes of the shards a worker holds."""

    behind: bool
    """Whether the loop may run a write behind the next batch's apply (``WriteBehind``)."""

    def reader(
        self, shards: list[Owned], args: list[dict[str, Any]], *, main: bool
    ) -> Callable[[], list[Any]]:
        """The fenced read of ``shards`` (``args``: per shard, ``fenced_read``'s arguments),
        prepared now on the loop's thread: a callable that returns one reply per shard, an
        error reply or a failure as a value. ``main``: it runs on the loop's thread too (a
        read-ahead runs it on its own thread)."""
        ...

    def failed_reads(
        self, shards: list[Owned], replies: list[Any]
    ) -> list[tuple[Owned, BaseException]]:
        """Resync every shard whose read may be lost (its entries may sit in our pending list
        unseen) and raise when the read as a whole failed; the shards that failed while others
        went through."""
        ...

    def write(self, batch: list[ShardWrite]) -> list[Status]:
        """Write the batch's effects, then ack each shard's entries once its effects are
        written. Raises when nothing was written; else a status per shard."""
        ...

    def idle(self, shards: list[Owned], wait_s: float) -> None:
        """Wait up to ``wait_s`` for new entries of ``shards``."""
        ...


def queue_read(conn: Conn, pipe: Any, o: Owned, args: dict[str, Any]) -> None:
    """Queue a shard's fenced read (``eventfleet/store/lua/fenced_read.lua``)."""
    name = o.name
    conn.scripts.fenced_read(
        pipe,
        lease=conn.keys.lease(name),
        events=conn.keys.events(name),
        inbox=conn.keys.inbox(name),
        own=conn.own(name),
        **args,
    )


def queue_write(conn: Conn, pipe: Any, w: ShardWrite) -> None:
    """Queue a shard's effects (not its ack: ``queue_ack``)."""
    queue_effects(
        pipe, conn.keys, conn.scripts, w.o.name, w.effects, w.upto, token=w.o.token, own=conn.own
    )


def queue_ack(conn: Conn, pipe: Any, w: ShardWrite) -> None:
    queue_acks(pipe, conn.keys, w.o.name, w.acks)


def ack_all(conn: Conn, batch: list[ShardWrite]) -> None:
    """The batch's acks in a pipeline of their own: only once every effect of the batch is
    confirmed written (``eventfleet.worker.effects.queue_effects``). On one Redis packed by
    hiredis as one write (``store.wire``); on a cluster through its pipeline, which sends
    each ack to its shard's master."""
    queue: Any = conn.r.pipeline(transaction=False) if conn.cluster else wire.Queue()
    for w in batch:
        queue_ack(conn, queue, w)
    if conn.cluster:
        queue.execute()
    else:
        wire.raise_first_error(wire.exchange(conn.r.connection_pool, queue.commands))


class Replicated:
    """``EVENTFLEET_WAIT_REPLICAS``: a batch's effects count as written once ``replicas``
    replicas of every master written to have them (``eventfleet.store.replication``); then the acks.
    Reads and idle waits are the wrapped implementation's."""

    def __init__(self, io: ShardIO, conn: Conn, replicas: int, timeout_ms: int) -> None:
        self._io = io
        self._conn = conn
        self._replicas = replicas
        self._timeout_ms = timeout_ms
        self.behind = False  # each write waits for its replicas before the loop goes on
        self.reader = io.reader
        self.failed_reads = io.failed_reads
        self.idle = io.idle

    def write(self, batch: list[ShardWrite]) -> list[Status]:
        conn = self._conn

        def queue(pipe: Any) -> None:
            for w in batch:
                queue_write(conn, pipe, w)

        write_replicated(conn.r, queue, self._replicas, self._timeout_ms)
        ack_all(conn, batch)
        return [(WRITTEN, None)] * len(batch)
