"""The idempotent publishing client.

Each producer process is one source, ``p:<uuid>``, and numbers its events per destination
shard from 1. A chunk whose reply was lost is sent again with the same numbers, and the
shard drops what it already applied: a retried publish takes effect once.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import redis

from ledger.codec import encode
from ledger.events import AddItem, Order, Topup
from ledger.shards import ShardCounts, destination
from worker import retry
from worker.connection import FatalRedisError
from worker.keys import EVENT_FIELD, Keys
from worker.replication import ShortOfReplicas, write_replicated

External = Topup | AddItem | Order
CHUNK = 1000


class NotReplicated(FatalRedisError):
    """Fewer replicas than asked acknowledged a chunk, retried for ``retry_for_s``."""


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

        def queue(pipe: Any) -> None:
            for stream, text in stamped:
                pipe.xadd(stream, {EVENT_FIELD: text})

        def go() -> list[Any]:
            if self.wait_replicas:
                return write_replicated(self.r, queue, self.wait_replicas, self.wait_timeout_ms)
            pipe = self.r.pipeline(transaction=False)
            queue(pipe)
            return list(pipe.execute())

        try:
            replies = retry.call(go, "publish", deadline=time.monotonic() + self.retry_for_s)
        except ShortOfReplicas as exc:
            raise NotReplicated(f"{exc}, for {self.retry_for_s:g} s") from None
        return [r.decode() if isinstance(r, bytes) else str(r) for r in replies[: len(stamped)]]

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
