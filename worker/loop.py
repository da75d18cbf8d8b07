"""The worker: one small main loop that reads a batch, applies it, writes effects, acks.

Ownership (heartbeats, leases, rebalancing, snapshots; ``worker.ownership``) runs between
batches in ``maintain``; each pass renews every lease and so bounds how long a batch may take.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor
from types import FrameType
from typing import Any

import redis
import structlog

from ledger.rules import StepResult, step
from ledger.shards import ShardCounts
from store import ids
from store.connection import TRANSIENT
from store.keys import EVENT_FIELD
from store.replication import write_replicated
from store.settings import Settings
from worker import metrics
from worker.effects import queue_effects
from worker.owned import Owned
from worker.ownership import Ownership

log = structlog.get_logger("eventfleet.worker")
CLUSTER_IDLE_POLL_S = 0.01
"""On Redis Cluster an idle worker polls again after this long, doubled after each empty poll
up to ``EVENTFLEET_BLOCK_MS`` (see ``idle_wait``)."""


class Worker(Ownership):
    """Reads, applies and writes; ``Ownership`` decides which shards it holds."""

    def __init__(self, settings: Settings, r: redis.Redis, counts: ShardCounts) -> None:
        super().__init__(settings, r, counts)
        self._empty_polls = 0
        self._reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="read-ahead")
        self._ahead: tuple[list[Owned], Future[list[Any]]] | None = None

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


def _field(flat: list[Any], name: bytes) -> bytes | None:
    for i in range(0, len(flat) - 1, 2):
        if flat[i] == name:
            return bytes(flat[i + 1])
    return None
