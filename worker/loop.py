"""The worker: one small main loop that reads a batch, applies it and writes its effects.

``Worker.poll`` is one batch: read (``eventfleet.worker.reads``, through the ``ShardIO`` chosen for
this
Redis, ``eventfleet.worker.shardio``), apply (``eventfleet.worker.apply``, in memory), write
(``eventfleet.worker.writebehind``:
the effects, then the acks). The worker holds an ``Ownership`` (heartbeats, leases,
rebalancing, snapshots; ``eventfleet.worker.ownership``) whose ``maintain`` pass runs between
batches;
each pass renews every lease and so bounds how long a batch may take. Metrics go through an
``Observer`` (``eventfleet.worker.observe``), once per batch.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from types import FrameType
from typing import Any

import redis
import structlog

from eventfleet.ledger.shards import ShardCounts
from eventfleet.store import retry
from eventfleet.store.connection import TRANSIENT
from eventfleet.store.errors import OutOfMemory
from eventfleet.store.settings import Settings
from eventfleet.worker.apply import apply_entries
from eventfleet.worker.clusterio import ClusterIO
from eventfleet.worker.conn import Conn
from eventfleet.worker.health import HealthState
from eventfleet.worker.liveness import check_peers, leave, open_liveness
from eventfleet.worker.modeldefer import flush_writes, may_defer
from eventfleet.worker.observe import Observer
from eventfleet.worker.owned import Owned
from eventfleet.worker.ownership import Ownership
from eventfleet.worker.pipelines import failed
from eventfleet.worker.reads import Reads
from eventfleet.worker.scripts import is_blocked, is_fenced
from eventfleet.worker.shardio import LOST, UNACKED, Replicated, ShardIO, ShardWrite, Status
from eventfleet.worker.singleio import SingleIO
from eventfleet.worker.standby import Standbys
from eventfleet.worker.writebehind import Waited, WriteBehind

log = structlog.get_logger("eventfleet.worker")
IDLE_POLL_S = 0.002
"""An idle worker polls again after this long, doubled after each empty poll up to
``EVENTFLEET_BLOCK_MS`` (see ``idle_wait``): producers append to inbox lists, which a
blocking stream read does not watch."""
BLOCKED_LOG_S = 60.0
FAILING_LOG_S = 5.0


def open_io(settings: Settings, conn: Conn) -> ShardIO:
    """The shard I/O for this Redis and these settings: per master on a cluster, with
    ``WAIT`` for replicas when ``EVENTFLEET_WAIT_REPLICAS`` asks for it."""
    io: ShardIO = ClusterIO(conn) if conn.masters is not None else SingleIO(conn)
    if settings.wait_replicas:
        timeout_ms = max(1, settings.lease_ttl_ms // 4)
        io = Replicated(io, conn, settings.wait_replicas, timeout_ms)
    return io


class Worker:
    """Reads, applies and writes; its ``Ownership`` decides which shards it holds."""

    def __init__(
        self,
        settings: Settings,
        r: redis.Redis,
        counts: ShardCounts,
        health: HealthState | None = None,
    ) -> None:
        """``health``: the state ``/healthz`` already serves (the server starts before the
        namespace wait); a new one when None."""
        self.s = settings
        self.counts = counts
        self.conn = Conn(settings, r)
        self._failing_said = -FAILING_LOG_S
        self.observe = Observer(settings.snapshot_interval_s)
        self.ownership = Ownership(settings, self.conn, counts, self.observe, health)
        self.health = self.ownership.health
        self._empty_polls = 0
        self._blocked_said: dict[str, float] = {}
        self.io = open_io(settings, self.conn)
        self.reads = Reads(settings, self.conn, self.io, self._say_failing)
        kind = WriteBehind if self.io.behind else Waited
        self.writes = kind(self.io, self.conn, self.ownership.lose, self._written)
        self.liveness = open_liveness(settings, self.conn)
        self.standbys = Standbys(settings, self.conn, counts)
        self.ownership.warm_copy = self.standbys.take
        self.ownership.on_handed_over = self.standbys.adopt

    # ---- signals -------------------------------------------------------------------
    def install_signals(self) -> None:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self.ownership.stopping:
            log.warning("hard_stop", signal=signal.Signals(signum).name)
            os._exit(1)
        self.ownership.stop()
        log.info("draining", signal=signal.Signals(signum).name, deadline_s=self.s.drain_timeout_s)

        def overdue() -> None:
            log.error("drain_deadline_passed", deadline_s=self.s.drain_timeout_s)
            os._exit(1)

        timer = threading.Timer(self.s.drain_timeout_s, overdue)
        timer.daemon = True
        timer.start()

    # ---- main loop -------------------------------------------------------------------
    def run(self) -> int:
        own = self.ownership
        shards = len(self.counts.all_shards())
        log.info("worker_started", shards=shards, lease_ttl_ms=self.s.lease_ttl_ms)
        # Every script loaded at once: each is sent by its SHA alone, and the first use of one
        # that Redis lacks is a NOSCRIPT, then the whole write sent again (a first read-model
        # write of a deferred backlog is megabytes). After a Redis restart that path remains.
        with contextlib.suppress(*TRANSIENT):
            self.conn.scripts.load(self.conn.r)
        while not own.stopping:
            self.health.tick()
            try:
                # our liveness record after our first heartbeat: peers that see it appear
                # pass at once, and must find us among the members (worker.handover)
                if own.joined and time.monotonic() >= self.liveness.next_check:
                    check_peers(self.liveness, own)
                if time.monotonic() >= own.next_pass:
                    self.flush_models()  # a snapshot covers no entry whose model waits
                    self.writes.settle()  # no snapshot or hand-over with a write in flight
                    own.maintain()
                    self.conn.refresh_producers()
                    held = (o.name for o in own.held())
                    self.standbys.retarget(own.members, held, own.growth.shards)
                elif time.monotonic() >= own.growth.next_seed_check and own.growth.seed_appeared():
                    own.expedite()  # a child of ours was seeded: take it now, not next pass
                elif (
                    time.monotonic() >= own.growth.next_target_check and own.growth.target_changed()
                ):
                    own.expedite()  # a reshard began: list its shards now, not next pass
                own.drop_overdue()
                if own.stopping:
                    break
                applied = self.poll()
                # shards being handed to us first: a standby's tail may fold a batch a shard
                if time.monotonic() >= self.standbys.next_tail and not own.receiving:
                    self.standbys.tail(busy=applied >= self.s.batch_size)
                if applied == 0:
                    self.writes.settle()
                    self.idle_wait()
                self.health.redis_ok = True
                retry.oom.passed("worker")
            except TRANSIENT as exc:
                self.health.redis_ok = False
                if isinstance(exc, OutOfMemory):
                    retry.oom.refused("worker")  # one line per episode, not one per pass
                else:
                    log.warning("redis_unavailable", error=f"{type(exc).__name__}: {exc!s:.200}")
                self.writes.settle_quietly()
                own.drop_overdue()
                time.sleep(self.conn.retry_wait)  # back off; the next pass retries
        with contextlib.suppress(*TRANSIENT):
            self.flush_models()
        self.writes.settle_quietly()
        clean = own.drain(announce=lambda: leave(self.liveness))
        leave(self.liveness)
        return 0 if clean else 1

    # ---- one batch: read, apply, write -------------------------------------------------
    def poll(self) -> int:
        """Read, apply and write one batch over the shards held; return the events it held."""
        shards = self.ownership.held()
        if not shards:
            return 0
        replies = self.reads.read(shards)
        t0 = time.monotonic()
        batch: list[ShardWrite] = []
        applied = events = 0
        splits = self.ownership.growth.splits
        size, defer_s = self.s.batch_size, self.s.model_defer_ms / 1000
        for o, rep in zip(shards, replies, strict=True):
            entries = self._entries(o, rep)
            if entries is None:
                continue
            if not entries:  # caught up: what waited for a later batch is written now
                batch += flush_writes([o])
                continue
            defer = may_defer(o, entries, size, defer_s)
            effects, acks, n = apply_entries(o, entries, self.counts, self.observe, splits, defer)
            applied += len(entries)
            events += n
            if acks:
                batch.append(ShardWrite(o, effects, acks, o.state.last_id))
        if applied:
            self._empty_polls = 0
        if batch:
            self.writes.write(batch)
            self.observe.batch_applied(events, time.monotonic() - t0)
        return events

    def flush_models(self) -> None:
        """Write every held shard's deferred read-model fields (``worker.modeldefer``)."""
        batch = flush_writes(self.ownership.held())
        if batch:
            self.writes.write(batch)

    def _entries(self, o: Owned, rep: Any) -> list[Any] | None:
        """A shard's entries to apply from its read's reply; None when there are none: its
        read failed (it resyncs), was refused (fenced: the shard is lost; blocked), or found
        nothing left of a resync."""
        if failed(rep):
            return None  # its master failed: the shard resyncs (ShardIO.failed_reads)
        if isinstance(rep, Exception):
            if is_fenced(rep):
                self.ownership.lose(o, "fenced read refused")
                return None
            if is_blocked(rep):
                self._blocked(o, rep)
                return None
            raise rep
        if o.resync:
            if not rep:
                o.resync_done()
                return None
            o.resync_past(rep[-1][0].decode())
        entries: list[Any] = rep
        return entries

    def _written(self, batch: list[ShardWrite], status: list[Status]) -> None:
        """After a write: a shard whose effects may not all be written (a cluster master
        failed) is dropped (its state is ahead of Redis) and taken over again; one whose
        effects are written but not its ack resyncs (its next read acks its applied
        entries). The other shards' batches count as written."""
        bad = [(w.o, st) for w, st in zip(batch, status, strict=True) if st[1] is not None]
        if not bad:
            return
        for o, (what, _err) in bad:
            if what == LOST:
                self.ownership.lose(o, "effects could not be written (a master failed)")
            elif what == UNACKED:
                o.resync_from_start()
        error = bad[0][1][1]
        assert error is not None
        self._say_failing("write_effects", [o for o, _ in bad], error)

    def _blocked(self, o: Owned, reply: Exception) -> None:
        """The shard's log takes no new entry (missing, or at the largest id): what producers
        sent waits in its inbox. Said once a minute per shard; the other shards go on."""
        now = time.monotonic()
        if now - self._blocked_said.get(o.name, -BLOCKED_LOG_S) >= BLOCKED_LOG_S:
            self._blocked_said[o.name] = now
            log.error("shard_log_blocked", shard=o.name, error=str(reply)[:300])

    def _say_failing(self, op: str, shards: list[Owned], error: BaseException) -> None:
        """One line every few seconds while some masters fail and the others are served."""
        now = time.monotonic()
        if now - self._failing_said >= FAILING_LOG_S:
            self._failing_said = now
            log.warning(
                "redis_master_unavailable",
                operation=op,
                shards=sorted(o.name for o in shards),
                error=f"{type(error).__name__}: {str(error)[:200]}",
            )

    def idle_wait(self) -> None:
        tail = float("inf") if self.ownership.receiving else self.standbys.next_tail
        own = self.ownership
        growth = own.growth
        due = min(
            own.next_pass,
            growth.next_seed_check,
            growth.next_target_check,
            self.liveness.next_check,
            tail,
        )
        wait_s = max(0.0, min(self.s.block_ms / 1000, due - time.monotonic()))
        held = self.ownership.held()
        shards = [o for o in held if not o.resync]
        if not shards or len(shards) != len(held):
            time.sleep(min(wait_s, 0.05)) if held else time.sleep(wait_s)
            return
        # Producers append to inbox lists, which no blocking read can watch without taking
        # from them: poll again shortly, backing off while nothing comes (an idle fleet of
        # many shards would otherwise keep Redis busy).
        self._empty_polls += 1
        self.io.idle(shards, min(wait_s, IDLE_POLL_S * 2 ** min(self._empty_polls - 1, 8)))
