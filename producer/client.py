"""The idempotent publishing client.

Each producer process is one source, ``p:<uuid>``, and numbers its events per destination
shard from 1. A chunk whose reply was lost is sent again with the same numbers, and the
shard drops what it already applied: a retried publish takes effect once.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from typing import Any, cast

import redis
from redis import exceptions as rx
from redis.cluster import RedisCluster

from ledger.codec import encode
from ledger.events import AddItem, Order, Topup
from ledger.shards import ShardCounts, destination
from worker import retry
from worker.connection import TRANSIENT, FatalRedisError, is_cluster
from worker.keys import EVENT_FIELD, Keys

External = Topup | AddItem | Order
CHUNK = 1000


class NotReplicated(FatalRedisError):
    """Fewer replicas than asked acknowledged a chunk, retried for ``retry_for_s``."""


class _ShortOfReplicas(rx.TimeoutError):
    """WAIT counted too few replicas, or could not count them (the slot moved, the master is
    now a replica): the chunk is sent again. Its events keep their seq numbers, so the shards
    apply each once."""


class Producer:
    def __init__(
        self,
        r: redis.Redis,
        keys: Keys,
        counts: ShardCounts,
        *,
        source: str | None = None,
        retry_for_s: float = 60.0,
        wait_replicas: int = 0,
        wait_timeout_ms: int = 1000,
    ) -> None:
        self.r = r
        self.keys = keys
        self.counts = counts
        self.source = source or f"p:{uuid.uuid4().hex}"
        self.seq: dict[str, int] = {}
        self.retry_for_s = retry_for_s
        self.wait_replicas = wait_replicas
        self.wait_timeout_ms = wait_timeout_ms

    def stamp(self, event: External) -> tuple[str, str]:
        """The stream key and entry text for the next event; advances the shard's seq."""
        shard = destination(event, self.counts)
        seq = self.seq.get(shard, 0) + 1
        self.seq[shard] = seq
        return self.keys.events(shard), encode(event, self.source, seq)

    def send(self, stamped: Sequence[tuple[str, str]]) -> list[str]:
        """Write stamped entries in one pipeline, retrying the whole chunk on a lost reply.

        With ``wait_replicas``, a chunk counts as sent only once that many replicas of every
        master it went to have it (WAIT); short of that it is sent again until ``retry_for_s``
        has passed, then ``NotReplicated`` is raised.
        """

        def go() -> list[Any]:
            if self.wait_replicas and is_cluster(self.r):
                return self._send_per_master(stamped)
            pipe = self.r.pipeline(transaction=False)
            for stream, text in stamped:
                pipe.xadd(stream, {EVENT_FIELD: text})
            if self.wait_replicas:
                pipe.wait(self.wait_replicas, self.wait_timeout_ms)
            replies = list(pipe.execute())
            if self.wait_replicas:
                self._check_acked(int(replies[-1]))
            return replies

        try:
            replies = retry.call(go, "publish", deadline=time.monotonic() + self.retry_for_s)
        except _ShortOfReplicas as exc:
            raise NotReplicated(f"{exc}, for {self.retry_for_s:g} s") from None
        return [r.decode() if isinstance(r, bytes) else str(r) for r in replies[: len(stamped)]]

    def _check_acked(self, acked: int) -> None:
        if acked < self.wait_replicas:
            raise _ShortOfReplicas(
                f"only {acked} of {self.wait_replicas} replicas acknowledged a chunk "
                f"within {self.wait_timeout_ms} ms"
            )

    def _send_per_master(self, stamped: Sequence[tuple[str, str]]) -> list[Any]:
        """On a cluster: one pipeline per master, its XADDs then WAIT on that connection.

        WAIT counts the replicas that have the writes of its own connection, so it must ride
        the connection that carried the writes. The cluster pipeline cannot promise that: it
        re-sends failed or redirected commands one by one on other connections.
        """
        rc = cast(RedisCluster, self.r)
        groups: dict[str, tuple[Any, list[int]]] = {}
        for i, (stream, _text) in enumerate(stamped):
            node = rc.get_node_from_key(stream)  # type: ignore[no-untyped-call]
            groups.setdefault(node.name, (node, []))[1].append(i)
        replies: list[Any] = [None] * len(stamped)
        for node, idx in groups.values():
            pipe = rc.get_redis_connection(node).pipeline(transaction=False)
            for i in idx:
                pipe.xadd(stamped[i][0], {EVENT_FIELD: stamped[i][1]})
            pipe.wait(self.wait_replicas, self.wait_timeout_ms)
            try:
                got = list(pipe.execute(raise_on_error=False))
            except TRANSIENT:
                with contextlib.suppress(*TRANSIENT, rx.RedisClusterException):
                    rc.nodes_manager.initialize()  # the master may have failed over
                raise
            for reply in got:
                if isinstance(reply, rx.ResponseError):
                    moved = isinstance(reply, rx.AskError | rx.ReadOnlyError) or (
                        "replica" in str(reply)  # WAIT on a master demoted to replica
                    )
                    if not moved:
                        raise reply
                    with contextlib.suppress(*TRANSIENT, rx.RedisClusterException):
                        rc.nodes_manager.initialize()
                    raise _ShortOfReplicas(f"the slots of {node.name} moved during a chunk")
            self._check_acked(int(got[-1]))
            for i, reply in zip(idx, got, strict=False):
                replies[i] = reply
        return replies

    def publish(
        self,
        events: Iterable[External],
        *,
        chunk: int = CHUNK,
        on_chunk: Callable[[int], None] | None = None,
    ) -> int:
        sent = 0
        buf: list[tuple[str, str]] = []
        for ev in events:
            buf.append(self.stamp(ev))
            if len(buf) >= chunk:
                self.send(buf)
                sent += len(buf)
                if on_chunk:
                    on_chunk(len(buf))
                buf = []
        if buf:
            self.send(buf)
            sent += len(buf)
            if on_chunk:
                on_chunk(len(buf))
        return sent
