"""Which shards this worker holds: heartbeats, rendezvous targets, leases, takeovers,
hand-overs, snapshots, and the final drain. Runs between batches (``maintain``)."""

from __future__ import annotations

import contextlib
import functools
import math
import time
from collections.abc import Callable
from typing import Any

import structlog
from structlog.contextvars import bound_contextvars

from eventfleet.ledger.shards import ShardCounts
from eventfleet.ledger.state import ShardState
from eventfleet.store import ids
from eventfleet.store.connection import TRANSIENT
from eventfleet.store.settings import Settings
from eventfleet.store.shardreads import SnapshotUnusable
from eventfleet.worker.assignment import targets
from eventfleet.worker.conn import Conn
from eventfleet.worker.growth import Growth
from eventfleet.worker.handover import Claim, Incoming, first_pass_acquires, holder_of
from eventfleet.worker.health import HealthState
from eventfleet.worker.observe import Observer
from eventfleet.worker.owned import Owned, earliest_deadline
from eventfleet.worker.rejoin import will_return
from eventfleet.worker.retention import retain, trim
from eventfleet.worker.suspend import suspend
from eventfleet.worker.takeover import LeaseLost, take_over

log = structlog.get_logger("eventfleet.worker")
LAPSE_MARGIN_S = 0.05
"""How long after a member's heartbeat lapses a worker looks again (leases lapse later)."""

UNUSABLE_RETRY_S = 30.0
"""How long a shard without a provable state is left alone before it is tried again."""


class Ownership:
    """The shards this worker holds, and keeping them held.

    Public interface (everything else is internal):

    - ``held()``: the shards held now, in acquisition order (``Owned``, whose state and
      read position the loop advances).
    - ``maintain()``: one pass: heartbeat, renew every lease, hand over shards no longer
      targeted, acquire and take over the targeted ones, snapshots due, snapshot ages.
    - ``next_pass``: monotonic time when the next ``maintain`` pass is due.
    - ``lose(o, why)``: drop a shard whose lease is gone or whose state must not be used
      again (a fenced read, effects not written before the lease deadline).
    - ``drop_overdue()``: drop every shard whose lease deadline passed without a renewal.
    - ``stop()`` / ``stopping``: leave the fleet; the next pass targets no shard.
    - ``drain()``: final snapshots, leases released, membership left; False if unclean.
    - ``health``: the ``HealthState`` behind ``/healthz`` and ``/readyz``.
    - ``gone``: workers found dead through their connection (``eventfleet.worker.liveness``), whose
      leases the next owners may break before they lapse; ``expedite()``: pass again now.
    - ``members``: the live members seen at the last pass.
    """

    def __init__(
        self,
        settings: Settings,
        conn: Conn,
        counts: ShardCounts,
        observe: Observer,
        health: HealthState | None = None,
    ) -> None:
        self.health = health or HealthState(stale_after_s=max(5.0, 3 * conn.ttl))
        self._s = settings
        self._conn = conn
        self._observe = observe
        self._wid = settings.worker_id
        self._ttl = conn.ttl
        self.growth = Growth(conn, counts)
        self._owned: dict[str, Owned] = {}
        self._members: list[str] = []
        self._target: set[str] = set()
        self._stopping = False
        self._next_pass = 0.0
        self._last_renew = 0.0
        self._joined = False
        self._static = settings.rejoin_grace_ms > 0
        self._reclaim = True
        """Until our first acquiring pass: leases still held under our id belong to an
        earlier process of this member and are taken back (static membership). After it, a
        lease under our id but not our token means another process uses the same id: left
        alone, so two such processes do not take shards from each other on every pass."""
        self.gone: frozenset[str] = frozenset()
        self._unusable: dict[str, float] = {}
        """Shards whose snapshot does not decode and have no provable state (``restore``):
        when to try again (an operator may have restored a snapshot meanwhile)."""
        self.warm_copy: Callable[[str], ShardState | None] = lambda _shard: None
        """A warm standby's copy of a shard being taken over (``eventfleet.worker.standby``)."""
        self.on_handed_over: Callable[[str, ShardState], None] = lambda _shard, _state: None
        """Called with a shard's state once it is handed over (its final snapshot written)."""
        self._incoming = Incoming(self._ttl)

    # ---- public ------------------------------------------------------------------------
    def held(self) -> list[Owned]:
        return list(self._owned.values())

    @property
    def next_pass(self) -> float:
        return self._next_pass

    @property
    def stopping(self) -> bool:
        return self._stopping

    def stop(self) -> None:
        self._stopping = True

    @property
    def members(self) -> list[str]:
        return list(self._members)

    @property
    def receiving(self) -> bool:
        """A shard is being handed to us (``eventfleet.worker.handover``)."""
        return self._incoming.waiting

    @property
    def joined(self) -> bool:
        """Our first heartbeat is written (the liveness record follows it, ``worker.loop``)."""
        return self._joined

    def expedite(self) -> None:
        """Run the next pass now (a peer died or left: its shards move)."""
        self._next_pass = time.monotonic()

    def maintain(self) -> None:
        t0 = time.monotonic()
        self._next_pass = t0 + self._ttl / 3
        self._heartbeat(t0)
        self._renew()
        if self._stopping:
            # a static member keeps its shards until its drain suspends them
            self._target = set(self._owned) if self._static else set()
        else:
            self._target = targets(self.growth.current(), self._members, self._wid)
        targeted = self._target  # what readiness waits for, even on the first pass
        if not self._joined:
            # Our first heartbeat is now visible; workers started with us see it at their next
            # pass. Acquiring only from the second pass keeps a fleet that starts together
            # from piling every shard on the first worker and then handing most over again;
            # joining a running fleet, we take what its members hand us at once (handover).
            self._joined = True
            if not first_pass_acquires(self._conn, sorted(targeted), self._members, self._wid):
                self._target = set()
        self._incoming.keep(self._target)
        for name in [n for n in self._owned if n not in self._target]:
            self._hand_over(self._owned[name])
        if wanted := self.growth.seeded(self._target, self._owned):
            self._acquire(wanted)
        if self._joined and targeted is self._target:
            self._reclaim = False
        now = time.monotonic()
        for o in list(self._owned.values()):
            if now >= o.next_snapshot and self._snapshot(o):
                retain(self._conn, self._s, o, int(o.snapshot_wall * 1000))
        wall = time.time()
        for o in self._owned.values():
            self._observe.snapshot_age(o.name, wall - o.snapshot_wall)
        self._observe.shards_owned(len(self._owned))
        self.health.holds_targets = targeted <= set(self._owned)
        self.health.held_until = min((o.deadline for o in self._owned.values()), default=math.inf)

    def lose(self, o: Owned, why: str) -> None:
        if self._owned.pop(o.name, None) is None:
            return
        self._observe.shard_dropped(o.name)
        if o.name in self._target:
            self.health.holds_targets = False
        self._observe.lease_lost(o.name)
        log.warning("lease_lost", shard=o.name, epoch=o.epoch, reason=why)

    def drop_overdue(self) -> None:
        now = time.monotonic()
        for o in [o for o in self._owned.values() if now >= o.deadline]:
            self.lose(o, "lease deadline passed without a renewal")

    def drain(self, announce: Callable[[], None] = lambda: None) -> bool:
        """Leave the member set, tell the peers (``announce``: the liveness record goes), then
        final snapshots and leases released one shard at a time: the peers target our shards
        at once and take each the moment it is released (``eventfleet.worker.handover``).

        A static member (``EVENTFLEET_REJOIN_GRACE_MS`` > 0) that expects to come back
        (``worker.rejoin``) instead keeps its membership and its leases for the grace period
        (``_suspend``).

        Returns False when a shard could not be handed over (Redis unreachable): its lease
        then expires by itself and the next owner replays from the last snapshot.
        """
        if self._static and will_return(self._s):
            return self._suspend()
        clean = True
        conn = self._conn
        try:
            conn.call(lambda: conn.r.zrem(conn.keys.workers, self._wid), "leave")
        except TRANSIENT:
            clean = False  # our heartbeat expires by itself
        announce()
        for o in list(self._owned.values()):
            try:
                self._hand_over(o)
            except TRANSIENT as exc:
                clean = False
                log.warning("handover_failed", shard=o.name, epoch=o.epoch, error=str(exc)[:200])
        self._observe.shards_owned(0)
        log.info("worker_stopped", clean=clean)
        return clean

    def _suspend(self) -> bool:
        clean = suspend(self._conn, self._s, list(self._owned.values()), self._snapshot)
        self._owned.clear()
        self._observe.shards_owned(0)
        return clean

    # ---- membership --------------------------------------------------------------------
    def _heartbeat(self, t0: float) -> None:
        conn = self._conn
        now_ms, live = conn.call(
            lambda: conn.scripts.heartbeat(
                conn.r,
                workers=conn.keys.workers,
                worker_id="" if self._stopping and not self._static else self._wid,
                ttl_ms=self._s.lease_ttl_ms,
            ),
            "heartbeat",
        )
        self._members = [m.decode() for m in live[0::2]]
        # When another member's heartbeat lapses before our next pass, pass again just after:
        # its leases lapse with it (each is renewed right after its heartbeat), and waiting
        # for the next regular pass would add up to a third of the TTL to every failover.
        lapses = [
            float(x) for m, x in zip(self._members, live[1::2], strict=True) if m != self._wid
        ]
        if lapses:
            lapse_s = (min(lapses) - int(now_ms)) / 1000 + LAPSE_MARGIN_S
            self._next_pass = min(self._next_pass, t0 + max(0.0, lapse_s))

    # ---- leases ------------------------------------------------------------------------
    def _renew(self) -> None:
        shards = list(self._owned.values())
        self._last_renew = time.monotonic()
        if not shards:
            return
        sent = time.monotonic()
        conn = self._conn

        def queue(pipe: Any, i: int) -> None:
            o = shards[i]
            conn.scripts.renew(
                pipe, lease=conn.keys.lease(o.name), token=o.token, ttl_ms=self._s.lease_ttl_ms
            )

        def go() -> list[Any]:  # on a cluster, a failing master leaves its shards unrenewed
            return conn.per_shard([conn.keys.lease(o.name) for o in shards], queue)

        for o, ok in zip(shards, conn.call(go, "renew", earliest_deadline(shards)), strict=True):
            if ok == 1:
                o.deadline = sent + self._ttl
            elif ok is not None:
                self.lose(o, "lease renewal refused")

    def _renew_if_due(self) -> None:
        if time.monotonic() - self._last_renew > self._ttl / 3:
            self._renew()

    def _acquire(self, wanted: list[str]) -> None:
        """Acquire ``wanted`` in one round trip, then take over what we got one shard at a
        time; before each next takeover, claim the shards handed to us meanwhile
        (``eventfleet.worker.handover``), so none waits unowned for the takeovers before it."""
        now = time.monotonic()
        todo = [s for s in wanted if self._unusable.get(s, 0.0) <= now]
        claims: list[Claim] = []
        while todo or claims:
            if todo:
                claims += self._claim(todo)
            if not claims:
                return
            try:
                self._adopt(claims.pop(0))
            except BaseException:  # the others' leases go now rather than lapse
                for c in claims:
                    self._release_token(c.shard, c.token)
                raise
            busy = {c.shard for c in claims} | set(self._owned)
            todo = [s for s in self._incoming.due(time.monotonic()) if s not in busy]

    def _claim(self, wanted: list[str]) -> list[Claim]:
        sent = time.monotonic()
        out = []
        for shard, reply in zip(wanted, self._send_acquire(wanted), strict=True):
            if reply is None:
                continue  # its master is failing (Redis Cluster): tried again next pass
            broke = ""
            got = reply
            if isinstance(got, list):  # we broke the lease of a worker found dead
                got, broke = got[0], ids.text(got[1])
            if not isinstance(got, int):
                self._held_elsewhere(shard, got, sent)
                continue
            self._incoming.done(shard)
            self._observe.lease_acquired(shard)
            out.append(Claim(shard, int(got), f"{self._wid}:{got}", sent, broke, sent))
        return out

    def _adopt(self, claim: Claim) -> None:
        """Take over a claimed shard and hold it."""
        self._renew_if_due()
        taken = self._take_over(claim)
        if taken is None:
            return
        state, replayed = taken
        o = Owned(
            claim.shard,
            claim.epoch,
            claim.token,
            state,
            # from the acquisition's send or the takeover's last renewal; `_renew` confirms it
            deadline=claim.renewed + self._ttl,
            next_snapshot=time.monotonic() + self._s.snapshot_interval_s,
            snapshot_wall=time.time(),
        )
        self._owned[claim.shard] = o
        self._renew()
        if replayed and claim.shard in self._owned:
            # bound the next owner's replay: shards that change hands often would
            # otherwise replay ever longer tails
            self._snapshot(o)

    def _send_acquire(self, wanted: list[str]) -> list[Any]:
        """One round trip: per shard, the new epoch (an int) if the lease is now ours, else
        its holder's token; on Redis Cluster, None when the shard's master failed."""
        conn = self._conn
        breakable = sorted(self.gone - {self._wid})

        def queue(pipe: Any, i: int) -> None:
            s = wanted[i]
            conn.scripts.acquire(
                pipe,
                lease=conn.keys.lease(s),
                epoch=conn.keys.epoch(s),
                worker_id=self._wid,
                ttl_ms=self._s.lease_ttl_ms,
                reclaim=self._reclaim,
                breakable=breakable,
            )

        # on a cluster, a failing master's shards are tried again at the next pass (even when
        # every wanted shard is on it: no retrying here while the held shards wait)
        keys = [conn.keys.lease(s) for s in wanted]
        return list(conn.call(lambda: conn.per_shard(keys, queue, all_failed=False), "acquire"))

    def _held_elsewhere(self, shard: str, holder: Any, sent: float) -> None:
        """A wanted lease is held. A holder gone from the members renewed its leases just
        after its last heartbeat, so they lapse a moment after it did: look again then, not
        a whole period later. A live holder hands it over at its next pass, and one that left
        releases it as it drains: look again soon (``eventfleet.worker.handover``)."""
        who = holder_of(holder)
        if who not in self._members:
            self._next_pass = min(self._next_pass, sent + LAPSE_MARGIN_S)
        if (at := self._incoming.retry_at(shard, who, self._wid, sent)) is not None:
            self._next_pass = min(self._next_pass, at)

    def _take_over(self, claim: Claim) -> tuple[ShardState, int] | None:
        """Restore, claim and replay the shard: its state and how many entries were replayed,
        or None if its lease was lost meanwhile."""
        conn = self._conn
        try:
            self._keep_alive(claim)  # it may have waited for the takeovers before it
            with bound_contextvars(shard=claim.shard, epoch=claim.epoch):
                state, stats = take_over(
                    conn.r,
                    conn.keys,
                    conn.scripts,
                    claim.shard,
                    self._wid,
                    self.growth.init,
                    self._s.max_deliveries,
                    functools.partial(self._keep_alive, claim),
                    restored=functools.partial(self._trim_restored, claim),
                    warm=self.warm_copy(claim.shard),
                    token=claim.token,
                    splits=self.growth.splits,
                )
        except TRANSIENT:
            self._release_token(claim.shard, claim.token)
            raise
        except SnapshotUnusable:  # said once by the takeover's quarantine; unowned, no loop
            self._release_token(claim.shard, claim.token)
            self._unusable[claim.shard] = time.monotonic() + UNUSABLE_RETRY_S
            return None
        except LeaseLost:
            self._observe.lease_lost(claim.shard)
            log.warning(
                "lease_lost", shard=claim.shard, epoch=claim.epoch, reason="during takeover"
            )
            return None
        log.info(
            "lease_acquired",
            shard=claim.shard,
            epoch=claim.epoch,
            broke=claim.broke or None,
            replayed=stats.replayed,
            claimed=stats.claimed,
            restored=stats.restored,
            warm=stats.warm,
            deleted_while_pending=stats.deleted_while_pending,
            poisoned=stats.poisoned,
            consumers_removed=stats.consumers_removed,
            seconds=round(stats.seconds, 4),
            since_acquire_s=round(time.monotonic() - claim.sent, 4),
        )
        return state, stats.replayed

    def _trim_restored(self, claim: Claim, state: ShardState) -> None:
        """Trim up to the snapshot just restored (see ``eventfleet.worker.retention``)."""
        deadline = claim.renewed + self._ttl
        trim(self._conn, self._s, claim.shard, claim.token, claim.epoch, state.last_id, 0, deadline)

    def _keep_alive(self, claim: Claim) -> None:
        """Called between replay chunks: renews the lease being taken over (and the others)
        every third of a TTL; raises ``LeaseLost`` when it is gone."""
        self.health.tick()  # a long replay is progress: /healthz stays 200
        now = time.monotonic()
        if now - claim.renewed < self._ttl / 3:
            return
        conn = self._conn
        ok = conn.call(
            lambda: conn.scripts.renew(
                conn.r,
                lease=conn.keys.lease(claim.shard),
                token=claim.token,
                ttl_ms=self._s.lease_ttl_ms,
            ),
            "renew",
        )
        if ok != 1:
            raise LeaseLost(claim.shard)
        claim.renewed = now
        if now - self._last_renew > self._ttl / 3:
            self._renew()

    def _release_token(self, shard: str, token: str) -> None:
        conn = self._conn
        with contextlib.suppress(*TRANSIENT):  # if this fails the lease expires by itself
            conn.scripts.release(conn.r, lease=conn.keys.lease(shard), token=token)

    def _hand_over(self, o: Owned) -> None:
        if not self._snapshot(o):
            return
        conn = self._conn
        with bound_contextvars(shard=o.name, epoch=o.epoch):
            conn.call(
                lambda: conn.scripts.release(conn.r, lease=conn.keys.lease(o.name), token=o.token),
                "release",
            )
        self._owned.pop(o.name, None)
        self.on_handed_over(o.name, o.state)
        self._observe.shard_dropped(o.name)
        self._observe.handed_over(o.name)
        log.info("handed_over", shard=o.name, epoch=o.epoch, last_id=o.state.last_id)

    # ---- snapshots --------------------------------------------------------------------
    def _snapshot(self, o: Owned) -> bool:
        t0 = time.monotonic()
        wall = time.time()
        data = o.state.to_snapshot(taken_ms=int(wall * 1000))
        conn = self._conn
        with bound_contextvars(shard=o.name, epoch=o.epoch):
            ok = conn.call(
                lambda: conn.scripts.save_snapshot(
                    conn.r,
                    lease=conn.keys.lease(o.name),
                    snapshot=conn.keys.snapshot(o.name),
                    token=o.token,
                    data=data,
                ),
                "snapshot",
                o.deadline,
            )
        if ok != 1:
            self.lose(o, "snapshot refused: lease no longer ours")
            return False
        o.next_snapshot = time.monotonic() + self._s.snapshot_interval_s
        o.snapshot_wall = wall
        self._observe.snapshot_written(o.name, len(data), time.monotonic() - t0)
        log.info(
            "snapshot_written",
            shard=o.name,
            epoch=o.epoch,
            bytes=len(data),
            last_id=o.state.last_id,
        )
        return True
