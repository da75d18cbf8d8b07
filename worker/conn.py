"""The worker's side of Redis: the client, its keys and scripts, and calls retried until a
deadline (by default one lease TTL from now), shared by the loop and ``Ownership``."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import redis

from eventfleet.store import retry
from eventfleet.store.connection import is_cluster
from eventfleet.store.keys import Keys
from eventfleet.store.producers import Bounds
from eventfleet.store.settings import Settings
from eventfleet.worker.pipelines import PerMaster
from eventfleet.worker.scripts import OwnInboxes, Scripts

MAX_RETRY_WAIT_S = 0.5


class Conn:
    def __init__(self, settings: Settings, r: redis.Redis) -> None:
        self.r = r
        self.keys = Keys(settings.namespace)
        self.scripts = Scripts.register(r)
        self.cluster = is_cluster(r)
        self.masters = PerMaster(r) if self.cluster else None
        """Redis Cluster: commands of many shards in one pipeline per master."""
        self.ttl = settings.lease_ttl_ms / 1000
        """The lease TTL in seconds."""
        self.retry_wait = min(MAX_RETRY_WAIT_S, self.ttl / 10)
        """The longest wait between two tries (and after a pass given up on Redis): a tenth
        of the TTL, so a worker is back within that of Redis answering again (a restart's
        AOF load takes seconds; a doubling back-off would sleep on past it)."""
        self.producers: tuple[str, ...] = ()
        """The registered producer names (``refresh_producers``), whose own inboxes the
        shards' moves take."""
        self.bounds = Bounds()
        self._own: dict[str, OwnInboxes] = {}

    def refresh_producers(self) -> None:
        """Read the registered producers and their inboxes' bound (meta): two reads, once
        per ownership pass; a producer added since starts being moved within one pass."""
        names: Any = self.r.hgetall(self.keys.producers)
        meta: Any = self.r.hgetall(self.keys.meta)
        got = tuple(sorted(n.decode() for n in names))
        bounds = Bounds.of(meta)
        if got != self.producers or bounds != self.bounds:
            self.producers, self.bounds, self._own = got, bounds, {}

    def own(self, shard: str) -> OwnInboxes:
        """The producers' own inboxes of ``shard`` as its move takes them."""
        o = self._own.get(shard)
        if o is None:
            o = self._own[shard] = OwnInboxes.of(self.keys, shard, self.producers, self.bounds)
        return o

    def per_shard(
        self, keys: list[str], queue: Callable[[Any, int], None], *, all_failed: bool = True
    ) -> list[Any]:
        """One command per item (``queue(pipe, i)``, ``keys[i]`` its key): per item, its
        reply. On a single Redis in one pipeline, which raises as a whole. On Redis Cluster in
        one pipeline per master: an item whose master failed gets None, and only when every
        item failed does the first failure raise (unless ``all_failed`` is False)."""
        if self.masters is not None:
            return self.masters.replies(keys, queue, all_failed=all_failed)
        pipe = self.r.pipeline(transaction=False)
        for i in range(len(keys)):
            queue(pipe, i)
        return list(pipe.execute())

    def call(self, fn: Callable[[], Any], op: str, deadline: float | None = None) -> Any:
        """``fn()``, retried on transient errors until ``deadline`` (monotonic time)."""
        return retry.call(
            fn,
            op,
            deadline=deadline if deadline else time.monotonic() + self.ttl,
            max_wait=self.retry_wait,
        )
