"""Reading the fleet's state from Redis during a chaos run: who holds each shard, how far its
group has read, and the waits built on that (every read survives a Redis restart)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import redis

from eventfleet.chaos.config import BACKLOG_CAP, POLL_S, RECOVERY_DEADLINE_S, ChaosError
from eventfleet.ledger.shards import ShardCounts
from eventfleet.ops.reshard_progress import MARKED, PUBLISHED
from eventfleet.store import ids, retry
from eventfleet.store.keys import GROUP, Keys
from eventfleet.store.namespace import counts_of
from eventfleet.worker.assignment import assign


@dataclass
class View:
    owner: str | None
    epoch: int
    delivered: str
    last: str
    pending: int
    expires: float
    """Monotonic time the lease runs out (0: no lease); a renewal moves it later."""
    inbox: int = 0
    """Events waiting in the shard's inbox (not yet moved into its log)."""

    @property
    def idle(self) -> bool:
        return self.inbox == 0 and self.pending == 0 and self.delivered == self.last


def holders(view: dict[str, View]) -> dict[str, list[str]]:
    """Worker id -> the shards it holds."""
    held: dict[str, list[str]] = {}
    for s, v in view.items():
        if v.owner:
            held.setdefault(v.owner, []).append(s)
    return held


class Observer:
    """The fleet's shards as Redis sees them, read through ``retry.call``.

    ``growing`` (``--reshard``): the shards are re-read from meta at each view, the
    published counts' and, once a running reshard has made them (its state ``marked`` or
    ``published``), its target's."""

    def __init__(self, r: redis.Redis, keys: Keys, counts: ShardCounts) -> None:
        self.r = r
        self.keys = keys
        self.counts = counts
        self.growing = False

    def call(self, fn: Callable[[], Any], op: str) -> Any:
        return retry.call(fn, op, deadline=time.monotonic() + 60.0)

    def shards(self) -> list[str]:
        """The shards to watch (re-read from meta while ``growing``)."""
        if not self.growing:
            return self.counts.all_shards()
        meta: Any = self.call(lambda: self.r.hgetall(self.keys.meta), "read_meta")
        self.counts = counts_of(meta, self.keys)
        users, items = self.counts.users, self.counts.items
        if (meta.get(b"reshard_state") or b"").decode() in (MARKED, PUBLISHED):
            u, _, i = (meta.get(b"reshard_target") or b"0,0").decode().partition(",")
            users, items = max(users, int(u)), max(items, int(i))
        return ShardCounts(users, items).all_shards()

    def view(self) -> dict[str, View]:
        shards = self.shards()

        def go() -> list[Any]:
            pipe = self.r.pipeline(transaction=False)
            for s in shards:
                pipe.get(self.keys.lease(s))
                pipe.pttl(self.keys.lease(s))
                pipe.xinfo_groups(self.keys.events(s))
                pipe.xinfo_stream(self.keys.events(s))
                pipe.llen(self.keys.inbox(s))
            return list(pipe.execute())

        replies = self.call(go, "chaos_view")
        now = time.monotonic()
        out = {}
        for i, s in enumerate(shards):
            lease, pttl, groups, info, inbox = replies[5 * i : 5 * i + 5]
            owner, epoch = None, 0
            if lease is not None:
                name, _, ep = ids.text(lease).rpartition(":")
                owner, epoch = name, int(ep)
            g = next(g for g in groups if ids.text(g["name"]) == GROUP)
            delivered, last = ids.text(g["last-delivered-id"]), ids.text(info["last-generated-id"])
            expires = now + int(pttl) / 1000 if int(pttl) > 0 else 0.0
            waiting = max(0, int(inbox) - 1)  # element 0 is the inbox's head
            out[s] = View(owner, epoch, delivered, last, int(g["pending"]), expires, waiting)
        return out

    def backlog(self, view: dict[str, View], shards: list[str]) -> int:
        """Entries unacked, not yet delivered or waiting in the inbox on ``shards`` (at most
        BACKLOG_CAP undelivered per shard, counted with XRANGE: XINFO's lag is unknown after a
        Redis restart)."""

        def go() -> list[Any]:
            pipe = self.r.pipeline(transaction=False)
            for s in shards:
                lo = ids.after_range(view[s].delivered) or view[s].last
                pipe.xrange(self.keys.events(s), min=lo, max=view[s].last, count=BACKLOG_CAP)
            return list(pipe.execute())

        undelivered = self.call(go, "chaos_backlog")
        return sum(
            view[s].pending + view[s].inbox + len(u)
            for s, u in zip(shards, undelivered, strict=True)
        )

    def wait_settled(self, worker_ids: Iterable[str]) -> bool:
        """Until ``worker_ids`` have joined and every shard is held by its rendezvous target
        (a new worker may win no shard at all: that is settled too)."""
        deadline = time.monotonic() + RECOVERY_DEADLINE_S
        want = set(worker_ids)
        while time.monotonic() < deadline:
            raw: Any = self.call(lambda: self.r.zrange(self.keys.workers, 0, -1), "members")
            members = {ids.text(m) for m in raw}
            if want <= members:
                target = assign(self.shards(), members)
                view = self.view()
                if all(view[s].owner == owner for s, owner in target.items()):
                    return True
            time.sleep(POLL_S)
        return False

    def wait_joined(self, worker_ids: Iterable[str]) -> bool:
        """Until ``worker_ids`` have all registered (a worker started by the last fault is
        past its start-up before it is sent SIGTERM); False after RECOVERY_DEADLINE_S."""
        deadline = time.monotonic() + RECOVERY_DEADLINE_S
        want = set(worker_ids)
        while time.monotonic() < deadline:
            raw: Any = self.call(lambda: self.r.zrange(self.keys.workers, 0, -1), "members")
            if want <= {ids.text(m) for m in raw}:
                return True
            time.sleep(POLL_S)
        return False

    def wait_all_owned(self) -> None:
        deadline = time.monotonic() + RECOVERY_DEADLINE_S
        while not all(v.owner for v in self.view().values()):
            if time.monotonic() > deadline:
                raise ChaosError("the workers did not take every shard within 60 s")
            time.sleep(POLL_S)

    def await_recovery(
        self, t0: float, before: dict[str, View], by_worker: bool
    ) -> tuple[list[float], list[str]]:
        """Until every shard of ``before`` applies again (worker faults: under a new holder;
        Redis faults: under a holder that renewed since), at most RECOVERY_DEADLINE_S after
        ``t0``. Returns the seconds each shard took and the shards that never did."""
        waiting = dict(before)
        recovery_s: list[float] = []
        while waiting and time.monotonic() - t0 < RECOVERY_DEADLINE_S:
            view = self.view()
            now = time.monotonic()
            for s, old in list(waiting.items()):
                v = view[s]
                if v.owner is None or v.epoch < old.epoch:
                    continue
                if v.epoch == old.epoch and (by_worker or v.expires <= old.expires + 0.05):
                    continue
                if v.idle or ids.after(v.delivered, old.delivered):
                    recovery_s.append(round(now - t0, 4))
                    del waiting[s]
            if waiting:
                time.sleep(POLL_S)
        return recovery_s, sorted(waiting)
