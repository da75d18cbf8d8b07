"""The worker: one small main loop that reads a batch, applies it, writes effects, acks.

Ownership (heartbeats, leases, rebalancing, snapshots) runs between batches in
``maintain``; each pass renews every lease and so bounds how long a batch may take.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from types import FrameType
from typing import Any

import redis
import structlog
from structlog.contextvars import bound_contextvars

from ledger.rules import StepResult, step
from ledger.shards import ShardCounts
from worker import ids, metrics, retry
from worker.assignment import targets
from worker.connection import TRANSIENT, is_cluster
from worker.effects import queue_effects
from worker.health import HealthState
from worker.keys import EVENT_FIELD, GROUP, Keys
from worker.owned import Owned
from worker.replication import write_replicated
from worker.scripts import Scripts
from worker.settings import Settings
from worker.takeover import LeaseLost, take_over

log = structlog.get_logger("eventfleet.worker")
LAG_SAMPLE_S = 2.0
LAPSE_MARGIN_S = 0.05
"""How long after another member's heartbeat lapses a worker looks again (its leases lapse
a renewal's round trip later)."""
CLUSTER_IDLE_POLL_S = 0.01
"""On Redis Cluster an idle worker polls again after this long, doubled after each empty poll
up to ``EVENTFLEET_BLOCK_MS`` (see ``idle_wait``)."""


class Worker:
    def __init__(self, settings: Settings, r: redis.Redis, counts: ShardCounts) -> None:
        self.s = settings
        self.r = r
        self.keys = Keys(settings.namespace)
        self.scripts = Scripts.register(r)
        self.cluster = is_cluster(r)
        self._empty_polls = 0
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
        self._reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="read-ahead")
        self._ahead: tuple[list[Owned], Future[list[Any]]] | None = None
        self._last_renew = 0.0
        self._joined = False

    # ---- signals -------------------------------------------------------------------
    def install_signals(self) -> None:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self.stopping:
            log.warning("hard_stop", signal=signal.Signals(signum).name)
            os._exit(1)
        self.stopping = True
        log.info("draining", signal=signal.Signals(signum).name, deadline_s=self.s.drain_timeout_s)

        def overdue() -> None:
            log.error("drain_deadline_passed", deadline_s=self.s.drain_timeout_s)
            os._exit(1)

        timer = threading.Timer(self.s.drain_timeout_s, overdue)
        timer.daemon = True
        timer.start()

    # ---- main loop -------------------------------------------------------------------
    def run(self) -> int:
        log.info("worker_started", shards=len(self.all_shards), lease_ttl_ms=self.s.lease_ttl_ms)
        while not self.stopping:
            self.health.tick()
            try:
                if time.monotonic() >= self._next_maint:
                    self.maintain()
                self._drop_overdue()
                if self.stopping:
                    break
                if self.poll() == 0:
                    self.idle_wait()
                self.health.redis_ok = True
            except TRANSIENT as exc:
                self.health.redis_ok = False
                log.warning("redis_unavailable", error=f"{type(exc).__name__}: {str(exc)[:200]}")
                self._drop_overdue()
                time.sleep(min(1.0, self.ttl / 4))  # back off; the next pass retries
        return 0 if self.drain() else 1

    def _call(self, fn: Callable[[], Any], op: str, deadline: float | None = None) -> Any:
        return retry.call(fn, op, deadline=deadline if deadline else time.monotonic() + self.ttl)

    def _deadline(self, shards: list[Owned]) -> float:
        return min(o.deadline for o in shards)

    # ---- reading and applying --------------------------------------------------------
    def poll(self) -> int:
        shards = list(self.owned.values())
        if not shards:
            return 0
        replies = self._take_ahead(shards)
        if replies is None:

            def read() -> list[Any]:
                args = [self._read_args(o, o.state.last_id) for o in shards]
                try:
                    return self._read(shards, args)
                except BaseException:
                    for o in shards:  # the reply is lost: entries may sit in our pending list
                        o.resync, o.cursor = True, "0"
                    raise

            replies = self._call(read, "read", self._deadline(shards))
        for rep in replies:
            if isinstance(rep, TRANSIENT):
                # A cluster pipeline hands a node's connection error back as that command's
                # reply. Nothing of this read is applied yet: re-read every shard's pending
                # entries first, as after a lost reply.
                for o in shards:
                    o.resync, o.cursor = True, "0"
                raise rep
        self._read_ahead(shards, replies)
        t0 = time.monotonic()
        batch: list[tuple[Owned, list[StepResult], list[bytes]]] = []
        applied = 0
        for o, rep in zip(shards, replies, strict=True):
            if isinstance(rep, Exception):
                if "FENCED" in str(rep):
                    self._lose(o, "fenced read refused")
                    continue
                raise rep
            if o.resync:
                if not rep:
                    o.resync, o.cursor = False, ">"
                    continue
                o.cursor = rep[-1][0].decode()
            results, acks = self._apply(o, rep)
            applied += len(rep)
            if acks:
                batch.append((o, results, acks))
        if applied:
            self._empty_polls = 0
        if batch:
            self._write(batch)
            metrics.BATCH_SIZE.observe(applied)
            metrics.BATCH_DURATION.observe(time.monotonic() - t0)
        return applied

    def _read_args(self, o: Owned, applied_to: str) -> list[Any]:
        return [o.token, self.wid, self.s.batch_size, o.cursor if o.resync else ">", applied_to]

    def _read(self, shards: list[Owned], args: list[list[Any]]) -> list[Any]:
        pipe = self.r.pipeline(transaction=False)
        for o, a in zip(shards, args, strict=True):
            self.scripts.fenced_read(
                keys=[self.keys.lease(o.name), self.keys.events(o.name)], args=a, client=pipe
            )
        return list(pipe.execute(raise_on_error=False))

    def _read_ahead(self, shards: list[Owned], replies: list[Any]) -> None:
        """With a backlog (a full batch came back), send the next read before applying this
        one: Redis prepares batch n+1 while this process applies batch n.

        Its fenced read starts after the entries in hand (they will be applied by the time it
        is used), and it is used only if the same shards are still owned then. A read-ahead
        that is dropped leaves its entries pending for us, and the next fenced read hands
        them back first (it starts with our own pending entries after the last applied id).
        Not on Redis Cluster: its client refreshes a shared slot map when a node fails, and
        this would run that from two threads at once.
        """
        full = any(isinstance(r, list) and len(r) >= self.s.batch_size for r in replies)
        if self.cluster or not full or any(o.resync for o in shards):
            return
        args = [
            self._read_args(o, ids.text(r[-1][0]) if isinstance(r, list) and r else o.state.last_id)
            for o, r in zip(shards, replies, strict=True)
        ]
        deadline = self._deadline(shards)
        fut = self._reader.submit(self._call, lambda: self._read(shards, args), "read", deadline)
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
                o.resync, o.cursor = True, "0"
            raise
        same = len(ahead) == len(shards) and all(a is b for a, b in zip(ahead, shards, strict=True))
        return replies if same else None

    def _apply(self, o: Owned, entries: list[Any]) -> tuple[list[StepResult], list[bytes]]:
        results: list[StepResult] = []
        acks: list[bytes] = []
        types: Counter[str] = Counter()
        dups = 0
        oldest: str | None = None
        # Entries come in id order, so only a batch that starts at or below the last applied
        # id needs a per-entry check: after a lost reply (resync), or if the group's position
        # ever fell behind a snapshot (a Redis that lost writes).
        check = bool(entries) and not ids.after(entries[0][0], o.state.last_id)
        for eid_b, flat in entries:
            acks.append(eid_b)
            eid = eid_b.decode()
            if check and not ids.after(eid, o.state.last_id):
                continue  # applied already; only its ack is missing
            raw = _field(flat, EVENT_FIELD)
            res = step(o.state, eid, raw, self.counts)
            results.append(res)
            if res.kind == "applied":
                types[res.event_type or "?"] += 1
                if oldest is None:
                    oldest = eid
            elif res.kind == "duplicate":
                dups += 1
            elif res.dead is not None:
                metrics.DEAD_LETTERS.labels(shard=o.name, reason=res.dead.reason).inc()
                log.warning(
                    "dead_letter",
                    shard=o.name,
                    epoch=o.epoch,
                    entry_id=eid,
                    reason=res.dead.reason,
                    error=res.dead.error[:300],
                )
            for out in res.outcomes:
                metrics.OUTCOMES.labels(
                    status=out.outcome.status, reason=out.outcome.reason or "none"
                ).inc()
        if oldest is not None:
            # one observation per shard batch, its oldest entry's (an observation per entry
            # cost more than applying a top-up); under load a batch spans milliseconds
            latency_s = time.time() - ids.millis(oldest) / 1000
            metrics.LATENCY.labels(family=o.family).observe(max(0.0, latency_s))
        for t, n in types.items():
            metrics.EVENTS_APPLIED.labels(family=o.family, shard=o.name, type=t).inc(n)
        if dups:
            metrics.DUPLICATES.labels(family=o.family, shard=o.name).inc(dups)
        return results, acks

    def _write(self, batch: list[tuple[Owned, list[StepResult], list[bytes]]]) -> None:
        def queue(pipe: Any) -> None:
            for o, results, acks in batch:
                queue_effects(pipe, self.keys, self.scripts, o.name, results, acks, o.state.last_id)

        def write() -> None:
            if self.s.wait_replicas:  # effects count as written once replicas have them
                timeout_ms = max(1, self.s.lease_ttl_ms // 4)
                write_replicated(self.r, queue, self.s.wait_replicas, timeout_ms)
                return
            pipe = self.r.pipeline(transaction=False)
            queue(pipe)
            pipe.execute()

        try:
            self._call(write, "write_effects", self._deadline([b[0] for b in batch]))
        except TRANSIENT:
            # The state in memory is ahead of what Redis holds: it must not be used again.
            for o, _, _ in batch:
                self._lose(o, "effects could not be written before the lease deadline")
            raise

    def idle_wait(self) -> None:
        wait_s = max(0.0, min(self.s.block_ms / 1000, self._next_maint - time.monotonic()))
        shards = [o for o in self.owned.values() if not o.resync]
        if not shards or len(shards) != len(self.owned):
            time.sleep(min(wait_s, 0.05)) if self.owned else time.sleep(wait_s)
            return
        if self.cluster:
            # XREAD over several streams needs them in one slot, and every shard has a slot
            # of its own: poll again shortly instead of blocking on the streams, backing off
            # while nothing comes (an idle fleet of many shards would otherwise keep Redis busy).
            self._empty_polls += 1
            backoff = CLUSTER_IDLE_POLL_S * 2 ** min(self._empty_polls - 1, 8)
            time.sleep(min(wait_s, backoff))
            return
        streams: dict[Any, Any] = {self.keys.events(o.name): o.state.last_id for o in shards}
        block = max(1, int(wait_s * 1000))
        self._call(
            lambda: self.r.xread(streams, count=1, block=block),
            "wait",
            time.monotonic() + self.ttl,
        )

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
            if epoch is None:
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


def _field(flat: list[Any], name: bytes) -> bytes | None:
    for i in range(0, len(flat) - 1, 2):
        if flat[i] == name:
            return bytes(flat[i + 1])
    return None
