"""Which shards this worker holds: heartbeats, rendezvous targets, leases, takeovers,
hand-overs, snapshots, and the final drain. Runs between batches (``maintain``)."""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from typing import Any

import redis
import structlog
from structlog.contextvars import bound_contextvars

from ledger.shards import ShardCounts
from store import ids, retry
from store.connection import TRANSIENT, is_cluster
from store.keys import GROUP, Keys
from store.settings import Settings
from worker import metrics
from worker.assignment import targets
from worker.health import HealthState
from worker.owned import Owned
from worker.scripts import Scripts
from worker.takeover import LeaseLost, take_over

log = structlog.get_logger("eventfleet.worker")
LAG_SAMPLE_S = 2.0
LAPSE_MARGIN_S = 0.05
"""How long after another member's heartbeat lapses a worker looks again (its leases lapse
a renewal's round trip later)."""


class Ownership:
    def __init__(self, settings: Settings, r: redis.Redis, counts: ShardCounts) -> None:
        self.s = settings
        self.r = r
        self.keys = Keys(settings.namespace)
        self.scripts = Scripts.register(r)
        self.cluster = is_cluster(r)
        self.counts = counts
        self.wid = settings.worker_id
        self.ttl = settings.lease_ttl_ms / 1000
        self.all_shards = counts.all_shards()
        self.owned: dict[str, Owned] = {}
        self.members: list[str] = []
        self.target: set[str] = set()
        self.stopping = False
        self.health = HealthState(stale_after_s=max(5.0, 3 * self.ttl))
        self._next_maint = 0.0
        self._next_lag = 0.0
        self._last_renew = 0.0
        self._joined = False

    def _call(self, fn: Callable[[], Any], op: str, deadline: float | None = None) -> Any:
        return retry.call(fn, op, deadline=deadline if deadline else time.monotonic() + self.ttl)

    def _deadline(self, shards: list[Owned]) -> float:
        return min(o.deadline for o in shards)

    # ---- ownership -------------------------------------------------------------------
    def maintain(self) -> None:
        t0 = time.monotonic()
        self._next_maint = t0 + self.ttl / 3
        now_ms, live = self._call(
            lambda: self.scripts.heartbeat(
                keys=[self.keys.workers],
                args=["" if self.stopping else self.wid, self.s.lease_ttl_ms],
            ),
            "heartbeat",
        )
        self.members = [m.decode() for m in live[0::2]]
        # When another member's heartbeat lapses before our next pass, pass again just after:
        # its leases lapse with it (each is renewed right after its heartbeat), and waiting
        # for the next regular pass would add up to a third of the TTL to every failover.
        lapses = [float(x) for m, x in zip(self.members, live[1::2], strict=True) if m != self.wid]
        if lapses:
            lapse_s = (min(lapses) - int(now_ms)) / 1000 + LAPSE_MARGIN_S
            self._next_maint = min(self._next_maint, t0 + max(0.0, lapse_s))
        self.renew()
        self.target = set() if self.stopping else targets(self.all_shards, self.members, self.wid)
        targeted = self.target  # what readiness waits for, even on the first pass
        if not self._joined:
            # Our first heartbeat is now visible; workers started with us see it at their next
            # pass. Acquiring only from the second pass keeps a fleet that starts together
            # from piling every shard on the first worker and then handing most over again.
            self._joined = True
            self.target = set()
        for name in [n for n in self.owned if n not in self.target]:
            self.hand_over(self.owned[name])
        wanted = [s for s in sorted(self.target) if s not in self.owned]
        if wanted:
            self.acquire(wanted)
        now = time.monotonic()
        for o in list(self.owned.values()):
            if now >= o.next_snapshot:
                self.snapshot(o)
        if now >= self._next_lag:
            self._next_lag = now + LAG_SAMPLE_S
            self.sample_lag()
        metrics.SHARDS_OWNED.set(len(self.owned))
        self.health.holds_targets = targeted <= set(self.owned)
        self.health.held_until = min((o.deadline for o in self.owned.values()), default=math.inf)

    def renew(self) -> None:
        shards = list(self.owned.values())
        self._last_renew = time.monotonic()
        if not shards:
            return
        sent = time.monotonic()

        def go() -> list[Any]:
            pipe = self.r.pipeline(transaction=False)
            for o in shards:
                self.scripts.renew(
                    keys=[self.keys.lease(o.name)], args=[o.token, self.s.lease_ttl_ms], client=pipe
                )
            return list(pipe.execute())

        for o, ok in zip(shards, self._call(go, "renew", self._deadline(shards)), strict=True):
            if ok == 1:
                o.deadline = sent + self.ttl
            else:
                self._lose(o, "lease renewal refused")

    def acquire(self, wanted: list[str]) -> None:
        sent = time.monotonic()

        def go() -> list[Any]:
            pipe = self.r.pipeline(transaction=False)
            for s in wanted:
                self.scripts.acquire(
                    keys=[self.keys.lease(s), self.keys.epoch(s)],
                    args=[self.wid, self.s.lease_ttl_ms],
                    client=pipe,
                )
            return list(pipe.execute())

        for shard, epoch in zip(wanted, self._call(go, "acquire"), strict=True):
            if not isinstance(epoch, int):
                # Held. A holder gone from the members renewed its leases just after its last
                # heartbeat, so they lapse a moment after it did: look again then, not a whole
                # period later.
                if ids.text(epoch).rpartition(":")[0] not in self.members:
                    self._next_maint = min(self._next_maint, sent + LAPSE_MARGIN_S)
                continue
            if time.monotonic() - self._last_renew > self.ttl / 3:
                self.renew()
            token = f"{self.wid}:{int(epoch)}"
            metrics.LEASE_ACQUIRED.labels(shard=shard).inc()
            renewed = [time.monotonic()]

            def keepalive(
                shard: str = shard, token: str = token, renewed: list[float] = renewed
            ) -> None:
                self.health.tick()  # a long replay is progress: /healthz stays 200
                now = time.monotonic()
                if now - renewed[0] < self.ttl / 3:
                    return
                ok = self._call(
                    lambda: self.scripts.renew(
                        keys=[self.keys.lease(shard)], args=[token, self.s.lease_ttl_ms]
                    ),
                    "renew",
                )
                if ok != 1:
                    raise LeaseLost(shard)
                renewed[0] = now
                if now - self._last_renew > self.ttl / 3:
                    self.renew()

            try:
                with bound_contextvars(shard=shard, epoch=int(epoch)):
                    state, stats = take_over(
                        self.r,
                        self.keys,
                        self.scripts,
                        shard,
                        self.wid,
                        self.counts,
                        self.s.max_deliveries,
                        keepalive,
                    )
            except TRANSIENT:
                self._release_token(shard, token)
                raise
            except LeaseLost:
                metrics.LEASE_LOSSES.labels(shard=shard).inc()
                log.warning("lease_lost", shard=shard, epoch=int(epoch), reason="during takeover")
                continue
            sent = renewed[0] if renewed[0] > sent else sent
            o = Owned(
                shard,
                int(epoch),
                token,
                state,
                deadline=sent + self.ttl,
                next_snapshot=time.monotonic() + self.s.snapshot_interval_s,
                snapshot_wall=time.time(),
            )
            self.owned[shard] = o
            log.info(
                "lease_acquired",
                shard=shard,
                epoch=int(epoch),
                replayed=stats.replayed,
                claimed=stats.claimed,
                restored=stats.restored,
                deleted_while_pending=stats.deleted_while_pending,
                poisoned=stats.poisoned,
                consumers_removed=stats.consumers_removed,
                seconds=round(stats.seconds, 4),
            )
            self.renew()
            if stats.replayed and shard in self.owned:
                # bound the next owner's replay: shards that change hands often would
                # otherwise replay ever longer tails
                self.snapshot(o)

    def _release_token(self, shard: str, token: str) -> None:
        with contextlib.suppress(*TRANSIENT):  # if this fails the lease expires by itself
            self.scripts.release(keys=[self.keys.lease(shard)], args=[token])

    def hand_over(self, o: Owned) -> None:
        if not self.snapshot(o):
            return
        with bound_contextvars(shard=o.name, epoch=o.epoch):
            self._call(
                lambda: self.scripts.release(keys=[self.keys.lease(o.name)], args=[o.token]),
                "release",
            )
        self.owned.pop(o.name, None)
        self._forget_gauges(o.name)
        metrics.LEASE_HANDOVERS.labels(shard=o.name).inc()
        log.info("handed_over", shard=o.name, epoch=o.epoch, last_id=o.state.last_id)

    def snapshot(self, o: Owned) -> bool:
        t0 = time.monotonic()
        wall = time.time()
        data = o.state.to_snapshot(taken_ms=int(wall * 1000))
        with bound_contextvars(shard=o.name, epoch=o.epoch):
            ok = self._call(
                lambda: self.scripts.save_snapshot(
                    keys=[self.keys.lease(o.name), self.keys.snapshot(o.name)], args=[o.token, data]
                ),
                "snapshot",
                o.deadline,
            )
        if ok != 1:
            self._lose(o, "snapshot refused: lease no longer ours")
            return False
        o.next_snapshot = time.monotonic() + self.s.snapshot_interval_s
        o.snapshot_wall = wall
        metrics.SNAPSHOT_DURATION.observe(time.monotonic() - t0)
        metrics.SNAPSHOT_SIZE.labels(shard=o.name).set(len(data))
        metrics.SNAPSHOT_AGE.labels(shard=o.name).set(0)
        log.info(
            "snapshot_written",
            shard=o.name,
            epoch=o.epoch,
            bytes=len(data),
            last_id=o.state.last_id,
        )
        return True

    def _lose(self, o: Owned, why: str) -> None:
        if self.owned.pop(o.name, None) is None:
            return
        self._forget_gauges(o.name)
        if o.name in self.target:
            self.health.holds_targets = False
        metrics.LEASE_LOSSES.labels(shard=o.name).inc()
        log.warning("lease_lost", shard=o.name, epoch=o.epoch, reason=why)

    def _drop_overdue(self) -> None:
        now = time.monotonic()
        for o in [o for o in self.owned.values() if now >= o.deadline]:
            self._lose(o, "lease deadline passed without a renewal")

    def _forget_gauges(self, shard: str) -> None:
        for g in (
            metrics.SHARD_LAG,
            metrics.SHARD_PENDING,
            metrics.SNAPSHOT_AGE,
            metrics.SNAPSHOT_SIZE,
        ):
            with contextlib.suppress(KeyError):
                g.remove(shard)

    def sample_lag(self) -> None:
        shards = list(self.owned.values())
        if not shards:
            return

        def go() -> list[Any]:
            pipe = self.r.pipeline(transaction=False)
            for o in shards:
                pipe.xinfo_groups(self.keys.events(o.name))
            return list(pipe.execute())

        now = time.time()
        for o, groups in zip(shards, self._call(go, "sample_lag"), strict=True):
            for g in groups:
                if ids.text(g["name"]) != GROUP:
                    continue  # another reader's group on the same stream
                # Redis reports no lag when it cannot tell (entries deleted): shown as 0
                metrics.SHARD_LAG.labels(shard=o.name).set(g.get("lag") or 0)
                metrics.SHARD_PENDING.labels(shard=o.name).set(g.get("pending") or 0)
            metrics.SNAPSHOT_AGE.labels(shard=o.name).set(now - o.snapshot_wall)

    # ---- shutdown --------------------------------------------------------------------
    def drain(self) -> bool:
        """Final snapshots, leases released, leave the member set: the next owners start now.

        Returns False when a shard could not be handed over (Redis unreachable): its lease
        then expires by itself and the next owner replays from the last snapshot.
        """
        clean = True
        for o in list(self.owned.values()):
            try:
                self.hand_over(o)
            except TRANSIENT as exc:
                clean = False
                log.warning("handover_failed", shard=o.name, epoch=o.epoch, error=str(exc)[:200])
        try:
            self._call(lambda: self.r.zrem(self.keys.workers, self.wid), "leave")
        except TRANSIENT:
            clean = False  # our heartbeat expires by itself
        metrics.SHARDS_OWNED.set(0)
        log.info("worker_stopped", clean=clean)
        return clean
