"""The worker: one small main loop that reads a batch, applies it, writes effects, acks.

The worker holds an ``Ownership`` (heartbeats, leases, rebalancing, snapshots;
``worker.ownership``) whose ``maintain`` pass runs between batches; each pass renews every
lease and so bounds how long a batch may take. Metrics go through an ``Observer``
(``worker.observe``), once per batch.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from types import FrameType
from typing import Any, cast

import redis
import structlog

from ledger.bundle import events_per_entry
from ledger.rules import DeadLetter, step_entry
from ledger.shards import ShardCounts
from store import ids, retry
from store.connection import TRANSIENT
from store.errors import OutOfMemory
from store.keys import flat_entry_event
from store.replication import write_replicated
from store.settings import Settings
from worker.conn import Conn
from worker.effects import Effects, queue_acks, queue_effects
from worker.health import HealthState
from worker.liveness import check_peers, leave, open_liveness
from worker.observe import Observer
from worker.owned import Owned, earliest_deadline
from worker.ownership import Ownership
from worker.pipelines import LOST, UNACKED, failed, transient, write_rounds
from worker.scripts import is_blocked, is_fenced
from worker.standby import Standbys
from worker.writebehind import WriteBehind

log = structlog.get_logger("eventfleet.worker")
IDLE_POLL_S = 0.002
"""An idle worker polls again after this long, doubled after each empty poll up to
``EVENTFLEET_BLOCK_MS`` (see ``idle_wait``): producers append to inbox lists, which a
blocking stream read does not watch."""
BLOCKED_LOG_S = 60.0
FAILING_LOG_S = 5.0


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
        self.masters = self.conn.masters
        self._failing_said = -FAILING_LOG_S
        self.observe = Observer(settings.snapshot_interval_s)
        self.ownership = Ownership(settings, self.conn, counts, self.observe, health)
        self.health = self.ownership.health
        self._empty_polls = 0
        self._blocked_said: dict[str, float] = {}
        self._ahead_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="read-ahead")
        # effects written while the next batch is applied (worker/writebehind.py); on a cluster
        # and with EVENTFLEET_WAIT_REPLICAS each write is waited for, as before
        single = self.masters is None and not settings.wait_replicas
        self._behind = WriteBehind(self.conn, self.ownership.lose) if single else None
        self._ahead: tuple[list[Owned], Future[list[Any]]] | None = None
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
        while not own.stopping:
            self.health.tick()
            try:
                if time.monotonic() >= self.liveness.next_check:
                    check_peers(self.liveness, own)
                if time.monotonic() >= own.next_pass:
                    self._settle()  # no snapshot or hand-over with a write in flight
                    own.maintain()
                    self.standbys.retarget(own.members, (o.name for o in own.held()))
                own.drop_overdue()
                if own.stopping:
                    break
                applied = self.poll()
                if time.monotonic() >= self.standbys.next_tail:
                    self.standbys.tail(busy=applied >= self.s.batch_size)
                if applied == 0:
                    self._settle()
                    self.idle_wait()
                self.health.redis_ok = True
                retry.oom.passed("worker")
            except TRANSIENT as exc:
                self.health.redis_ok = False
                if isinstance(exc, OutOfMemory):
                    retry.oom.refused("worker")  # one line per episode, not one per pass
                else:
                    log.warning("redis_unavailable", error=f"{type(exc).__name__}: {exc!s:.200}")
                if self._behind is not None:
                    self._behind.settle_quietly()
                own.drop_overdue()
                time.sleep(self.conn.retry_wait)  # back off; the next pass retries
        if self._behind is not None:
            self._behind.settle_quietly()
        clean = own.drain()
        leave(self.liveness)
        return 0 if clean else 1

    # ---- reading and applying --------------------------------------------------------
    def poll(self) -> int:
        """Read, apply and write one batch over the shards held; return the events it held."""
        shards = self.ownership.held()
        if not shards:
            return 0
        replies = self._take_ahead(shards)
        if replies is None:
            args = [self._read_args(o, o.state.last_id) for o in shards]
            reader = self._reader(shards, args, main=True)

            def read() -> list[Any]:
                try:
                    return reader()
                except BaseException:
                    for o in shards:  # the reply is lost: entries may sit in our pending list
                        o.resync_from_start()
                    raise

            replies = self.conn.call(read, "read", earliest_deadline(shards))
        self._check_read(shards, replies)
        self._read_ahead(shards, replies)
        t0 = time.monotonic()
        batch: list[tuple[Owned, Effects, list[bytes]]] = []
        applied = events = 0
        for o, rep in zip(shards, replies, strict=True):
            if failed(rep):
                continue  # its master failed: the shard resyncs (see _check_read)
            if isinstance(rep, Exception):
                if is_fenced(rep):
                    self.ownership.lose(o, "fenced read refused")
                    continue
                if is_blocked(rep):
                    self._blocked(o, rep)
                    continue
                raise rep
            if o.resync:
                if not rep:
                    o.resync_done()
                    continue
                o.resync_past(rep[-1][0].decode())
            effects, acks, n = self._apply(o, rep)
            applied += len(rep)
            events += n
            if acks:
                batch.append((o, effects, acks))
        if applied:
            self._empty_polls = 0
        if batch:
            self._write(batch)
            self.observe.batch_applied(events, time.monotonic() - t0)
        return events

    def _blocked(self, o: Owned, reply: Exception) -> None:
        """The shard's log takes no new entry (missing, or at the largest id): what producers
        sent waits in its inbox. Said once a minute per shard; the other shards go on."""
        now = time.monotonic()
        if now - self._blocked_said.get(o.name, -BLOCKED_LOG_S) >= BLOCKED_LOG_S:
            self._blocked_said[o.name] = now
            log.error("shard_log_blocked", shard=o.name, error=str(reply)[:300])

    def _read_args(self, o: Owned, applied_to: str) -> dict[str, Any]:
        batch = self.s.batch_size  # read: entries (bundles hold many); move: inbox events
        return {
            "token": o.token,
            "consumer": self.s.worker_id,
            "count": o.count(batch),
            "start": o.read_from,
            "applied_to": applied_to,
            "move_limit": batch,
        }

    def _reader(
        self, shards: list[Owned], args: list[dict[str, Any]], *, main: bool
    ) -> Callable[[], list[Any]]:
        """The fenced read of ``shards``: a callable that returns one reply per shard.

        On one Redis, one pipeline. On a cluster, one pipeline per master, grouped now (the
        slot map is read on this thread); a shard whose master failed gets the error as its
        reply. ``main``: the call runs on this thread too, and sends what failed once more
        through the cluster client (redirections, a refreshed slot map); the read-ahead
        thread only sends.
        """
        conn = self.conn

        def queue(pipe: Any, i: int) -> None:
            name = shards[i].name
            conn.scripts.fenced_read(
                pipe,
                lease=conn.keys.lease(name),
                events=conn.keys.events(name),
                inbox=conn.keys.inbox(name),
                **args[i],
            )

        masters = self.masters
        if masters is None:

            def read() -> list[Any]:
                pipe = conn.r.pipeline(transaction=False)
                for i in range(len(shards)):
                    queue(pipe, i)
                return list(pipe.execute(raise_on_error=False))

            return read
        plan = masters.plan([conn.keys.events(o.name) for o in shards])

        def read_per_master() -> list[Any]:
            out = masters.execute(plan, len(shards), queue)
            if main:
                masters.retry_failed(out, queue)
            return [r[0] if isinstance(r, list) else r for r in out]

        return read_per_master

    def _check_read(self, shards: list[Owned], replies: list[Any]) -> None:
        """A shard whose read failed (its master unreachable, its slot moved) resyncs: its
        entries may sit in our pending list unseen, as after a lost reply. On a cluster only
        those shards; the others are applied. Raises when no shard's read went through."""
        bad = [(o, rep) for o, rep in zip(shards, replies, strict=True) if failed(rep)]
        if not bad:
            return
        if self.masters is None:
            # a single Redis: the whole pipeline's reply is lost
            for o in shards:
                o.resync_from_start()
            raise bad[0][1]
        for o, _ in bad:
            o.resync_from_start()
        if len(bad) == len(shards):
            raise transient(bad[0][1])
        self._say_failing("read", [o for o, _ in bad], bad[0][1])

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

    def _read_ahead(self, shards: list[Owned], replies: list[Any]) -> None:
        """With a backlog (a full batch came back), send the next read before applying this
        one: Redis prepares batch n+1 while this process applies batch n.

        Its fenced read starts after the entries in hand (they will be applied by the time it
        is used), and it is used only if the same shards are still owned then. A read-ahead
        that is dropped leaves its entries pending for us, and the next fenced read hands
        them back first (it starts with our own pending entries after the last applied id).
        On Redis Cluster the pipelines per master are grouped here; the thread only sends
        them on the masters' own clients (the cluster client's slot map, which a failure
        refreshes, is only touched on this thread).
        """
        full = any(
            isinstance(r, list) and len(r) >= o.count(self.s.batch_size)
            for o, r in zip(shards, replies, strict=True)
        )
        if not full or any(o.resync for o in shards):
            return
        args = [
            self._read_args(o, ids.text(r[-1][0]) if isinstance(r, list) and r else o.state.last_id)
            for o, r in zip(shards, replies, strict=True)
        ]
        deadline = earliest_deadline(shards)
        read = self._reader(shards, args, main=False)
        fut = self._ahead_pool.submit(self.conn.call, read, "read", deadline)
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
                o.resync_from_start()
            raise
        same = len(ahead) == len(shards) and all(a is b for a, b in zip(ahead, shards, strict=True))
        return replies if same else None

    def _apply(self, o: Owned, entries: list[Any]) -> tuple[Effects, list[bytes], int]:
        """Apply a shard's entries: their effects, the ids to ack and how many events."""
        effects = Effects()
        add = effects.add
        acks: list[bytes] = []
        types: Counter[str] = Counter()
        outcomes: Counter[tuple[str, str]] = Counter()
        dups = events = 0
        oldest: str | None = None
        state, counts = o.state, self.counts
        # Entries come in id order, so only a batch that starts at or below the last applied
        # id needs a per-entry check: after a lost reply (resync), or if the group's position
        # ever fell behind a snapshot (a Redis that lost writes).
        check = bool(entries) and not ids.after(entries[0][0], state.last_id)
        for eid_b, flat in entries:
            acks.append(eid_b)
            eid = eid_b.decode()
            if check and not ids.after(eid, state.last_id):
                continue  # applied already; only its ack is missing
            raw, via_inbox = flat_entry_event(flat)
            for res in step_entry(state, eid, raw, counts, from_inbox=via_inbox):
                events += 1
                add(res)  # the result itself is dropped here (see Effects)
                if res.kind == "applied":
                    types[res.event_type or "?"] += 1
                    if oldest is None:
                        oldest = eid
                elif res.kind == "duplicate":
                    dups += 1
                for out in res.outcomes:
                    outcomes[out.status, out.reason or "none"] += 1
        if entries:
            o.per_entry = events_per_entry(events, len(entries))
        if types or dups:
            self.observe.shard_applied(o.name, o.family, types, dups, oldest)
        if outcomes:
            self.observe.outcomes(outcomes)
        if effects.dead:
            self.observe.dead_lettered(o.name, effects.dead)
            _log_dead_letters(o, effects.dead)
        return effects, acks, events

    def _settle(self) -> None:
        """Wait for the effects in flight (raises, their shards lost, when they failed)."""
        if self._behind is not None:
            self._behind.settle()

    def _write(self, batch: list[tuple[Owned, Effects, list[bytes]]]) -> None:
        conn = self.conn
        masters = self.masters
        status: list[tuple[str, BaseException | None]] = []
        uptos = [o.state.last_id for o, _, _ in batch]  # now: the loop moves on meanwhile

        def queue_writes(pipe: Any, i: int) -> None:
            o, effects, _ = batch[i]
            queue_effects(pipe, conn.keys, conn.scripts, o.name, effects, uptos[i])

        def queue_one(pipe: Any, i: int) -> None:  # write_rounds sends the ack on its own
            queue_writes(pipe, i)
            queue_acks(pipe, conn.keys, batch[i][0].name, batch[i][2])

        def queue(pipe: Any) -> None:
            for i in range(len(batch)):
                queue_writes(pipe, i)

        def ack() -> None:
            """Only once every effect of the batch is written (see ``queue_effects``)."""
            pipe = conn.r.pipeline(transaction=False)
            for o, _, acks in batch:
                queue_acks(pipe, conn.keys, o.name, acks)
            pipe.execute()

        def write() -> None:
            if self.s.wait_replicas:  # effects count as written once replicas have them
                timeout_ms = max(1, self.s.lease_ttl_ms // 4)
                write_replicated(conn.r, queue, self.s.wait_replicas, timeout_ms)
                ack()
                return
            if masters is not None:  # Redis Cluster: per master, see _settle_per_master
                homes = [conn.keys.events(o.name) for o, _, _ in batch]
                status[:] = write_rounds(masters, homes, queue_one)
                if all(err is not None for _, err in status):
                    raise transient(cast(BaseException, status[0][1]))  # none went through
                return
            pipe = conn.r.pipeline(transaction=False)
            queue(pipe)
            pipe.execute()  # raises at a refused write: nothing is acked
            ack()

        deadline = earliest_deadline(o for o, _, _ in batch)
        if self._behind is not None:
            shards = [o for o, _, _ in batch]
            self._behind.settle(also=shards)  # the previous batch's effects first
            self._behind.send(shards, write, deadline)
            return
        try:
            conn.call(write, "write_effects", deadline)
        except TRANSIENT:
            # The state in memory is ahead of what Redis holds: it must not be used again.
            for o, _, _ in batch:
                self.ownership.lose(o, "effects could not be written before the lease deadline")
            raise
        if status:
            self._settle_per_master(batch, status)

    def _settle_per_master(
        self,
        batch: list[tuple[Owned, Effects, list[bytes]]],
        status: list[tuple[str, BaseException | None]],
    ) -> None:
        """Redis Cluster, after ``write_rounds`` wrote some shards' effects: a shard whose
        effects may not all be written is dropped (its state is ahead of Redis) and taken
        over again; one whose effects are written but not its ack resyncs (its next read acks
        its applied entries). The other shards' batches count as written."""
        bad = [(o, st) for (o, _, _), st in zip(batch, status, strict=True) if st[1] is not None]
        for o, (what, _err) in bad:
            if what == LOST:
                self.ownership.lose(o, "effects could not be written (a master failed)")
            elif what == UNACKED:
                o.resync_from_start()
        if bad:
            self._say_failing("write_effects", [o for o, _ in bad], cast(Exception, bad[0][1][1]))

    def idle_wait(self) -> None:
        due = min(self.ownership.next_pass, self.liveness.next_check, self.standbys.next_tail)
        wait_s = max(0.0, min(self.s.block_ms / 1000, due - time.monotonic()))
        held = self.ownership.held()
        shards = [o for o in held if not o.resync]
        if not shards or len(shards) != len(held):
            time.sleep(min(wait_s, 0.05)) if held else time.sleep(wait_s)
            return
        # Producers append to inbox lists, which no blocking read can watch without taking
        # from them: poll again shortly, backing off while nothing comes (an idle fleet of
        # many shards would otherwise keep Redis busy).
        conn = self.conn
        self._empty_polls += 1
        backoff = min(wait_s, IDLE_POLL_S * 2 ** min(self._empty_polls - 1, 8))
        if conn.cluster:
            # XREAD over several streams needs them in one slot, and every shard has a slot
            # of its own: sleep instead.
            time.sleep(backoff)
            return
        # On one Redis, wait on the shard streams meanwhile: an event another shard emits
        # (the saga's next step) wakes the worker at once.
        streams: dict[Any, Any] = {conn.keys.events(o.name): o.state.last_id for o in shards}
        block = max(1, int(backoff * 1000))
        conn.call(
            lambda: conn.r.xread(streams, count=1, block=block),
            "wait",
            time.monotonic() + conn.ttl,
        )


def _log_dead_letters(o: Owned, dead: list[DeadLetter]) -> None:
    for d in dead:
        log.warning(
            "dead_letter",
            shard=o.name,
            epoch=o.epoch,
            entry_id=d.entry_id,
            reason=d.reason,
            error=d.error[:300],
        )
