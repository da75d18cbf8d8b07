"""Crash detection through Redis' own view of connections.

Each worker keeps one extra connection, its *liveness connection*, to the node that holds
``NS:workers`` and registers that connection's client id in ``NS:live{NS:workers}`` (a zset
of ``<worker id> <client id> <node>`` scored with the registration time). When a process
dies (SIGKILL, OOM kill, a crashed pod), the kernel closes its sockets and Redis drops the
connection at once. Every
``EVENTFLEET_LIVENESS_CHECK_MS`` each worker asks that node ``CLIENT LIST ID <peers' ids>``;
a registered id that is no longer connected is a dead worker: it is *expelled* (removed from
the members, recorded in ``NS:gone{NS:workers}`` until its leases would lapse anyway) and the
next owners of its shards acquire them with a new epoch at once, breaking its leases.

A paused (SIGSTOP) or partitioned worker keeps its connection open, so it looks alive here
and is handled by the lease TTL and fencing, as any worker is. Safety never depends on this
path: a worker wrongly expelled (its liveness connection dropped while it lived) only finds
its renewals refused and its fenced reads and snapshots rejected, as a zombie would.

Records are trusted only when written after this worker's own liveness connection
registered (see ``Liveness._check``): after a Redis restart or a failover every id changes,
and records from before are ignored until their workers register again.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import redis
import structlog

from eventfleet.store import ids, wire
from eventfleet.store.connection import node_client
from eventfleet.store.keys import Keys
from eventfleet.store.settings import Settings
from eventfleet.worker.conn import Conn
from eventfleet.worker.ownership import Ownership
from eventfleet.worker.scripts import expel_command, register_command

log = structlog.get_logger("eventfleet.liveness")

STALE_AFTER_TTLS = 10
"""A record not refreshed for this many lease TTLs belongs to a worker that is gone."""


@dataclass(frozen=True)
class Record:
    """A worker's registered liveness connection."""

    worker: str
    client_id: int
    node: str
    registered_ms: int

    @property
    def member(self) -> str:
        return f"{self.worker} {self.client_id} {self.node}"


def parse_record(member: object, score: object) -> Record | None:
    """``<worker id> <client id> <node>`` scored with its registration time (ms); None for
    anything else (a hostile or buggy writer)."""
    try:
        parts = ids.text(member).split(" ")
        ms = int(float(ids.text(score)) if isinstance(score, bytes | str) else float(score))  # type: ignore[arg-type]
    except (ValueError, OverflowError, TypeError):  # not text, not a number, nan or inf
        return None
    if len(parts) != 3 or not parts[0] or not parts[1].isascii() or not parts[1].isdigit():
        return None
    return Record(parts[0], int(parts[1]), parts[2], ms)


def connection_name(worker_id: str) -> str:
    """The client name of a worker's liveness connection (``CLIENT LIST`` shows it). Not the
    worker id itself, which names its other connections: after a Redis restart an old
    liveness id may come back as one of those, and must not pass for the liveness one."""
    return f"live:{worker_id}"


def pairs(reply: Any) -> list[tuple[Any, Any]]:
    """(member, score) pairs of a ``ZRANGE ... WITHSCORES`` reply: nested pairs (RESP3) or
    one flat list (RESP2)."""
    items = list(reply or [])
    if items and isinstance(items[0], list | tuple):
        return [(m[0], m[1]) for m in items]
    return list(zip(items[::2], items[1::2], strict=False))


def connected(reply: object) -> dict[int, str]:
    """Client id -> name of each client in a ``CLIENT LIST`` reply (one line per client,
    ``id=<n> addr=... name=<name> ...``)."""
    out: dict[int, str] = {}
    for line in ids.text(reply).splitlines():
        fields = dict(f.partition("=")[::2] for f in line.split(" "))
        cid = fields.get("id", "")
        if cid.isascii() and cid.isdigit():
            out[int(cid)] = fields.get("name", "")
    return out


def dead_peers(
    watched: dict[str, int], records: dict[str, Record], present: dict[int, str]
) -> list[str]:
    """Watched workers still registered with the same connection, which is no longer open."""
    return sorted(
        w
        for w, cid in watched.items()
        if (rec := records.get(w)) is not None and rec.client_id == cid and cid not in present
    )


@dataclass
class Verdict:
    """One check's findings."""

    expelled: list[str] = field(default_factory=list)
    """Workers found dead and expelled by this check."""
    changed: bool = False
    """The registered workers changed (one joined or left): rebalance now."""
    gone: frozenset[str] = frozenset()
    """Workers whose leases may be broken (their connection closed; leases not yet lapsed)."""


class Liveness:
    """This worker's liveness connection and the checks of its peers' connections.

    ``open_client`` returns a plain client with one connection to the node of ``NS:workers``
    (``eventfleet.store.connection.node_client``). Every Redis error here is reported to the caller,
    which skips the fast path for that check: the lease TTL still covers every failure.
    """

    def __init__(
        self,
        worker_id: str,
        keys: Keys,
        lease_ttl_ms: int,
        check_ms: int,
        open_client: Callable[[], tuple[redis.Redis, str]],
    ) -> None:
        self._wid = worker_id
        self._keys = keys
        self._ttl_ms = lease_ttl_ms
        self._interval = check_ms / 1000
        self._open = open_client
        self._client: redis.Redis | None = None
        self._node = ""
        self._my_id: int | None = None
        self._registered_ms = 0
        """Redis' time when the current liveness connection registered: records older than
        this may name connections of an earlier Redis (restart, failover) and are ignored."""
        self._next_refresh = 0.0
        self._watched: dict[str, int] = {}
        """Peers whose registered connection is known to be of this Redis: a closed one means
        a dead worker."""
        self._unsure: dict[str, int] = {}
        """Peers registered before our connection whose ids we have not seen connected yet:
        asked about, but their absence proves nothing (they may be of an earlier Redis)."""
        self._sure: dict[str, int] = {}
        """Peers whose registered id we have seen connected under their name."""
        self._seen: frozenset[str] | None = None
        self.next_check = 0.0 if check_ms else float("inf")

    @property
    def enabled(self) -> bool:
        return self._interval > 0

    # ---- the connection --------------------------------------------------------------
    def _connection(self) -> Any:
        if self._client is None:
            self._client, self._node = self._open()
            conn: Any = self._client.connection
            conn.register_connect_callback(self._on_connect)
            if conn._sock is not None:  # the client connected while it was made
                self._on_connect(conn)
        conn = self._client.connection
        if conn._sock is None:  # connect now, so the registration runs before anything else
            conn.connect()
        return conn

    def _on_connect(self, conn: Any) -> None:
        """Runs on every (re)connect, before any other command on the new connection."""
        self._my_id = int(wire.roundtrip(conn, [("CLIENT", "ID")])[0])
        # ids seen over an earlier connection may be of an earlier Redis
        self._watched, self._unsure, self._sure = {}, {}, {}
        self._registered_ms = int(self._register(conn))
        self._next_refresh = time.monotonic() + self._ttl_ms / 3000
        log.info("liveness_registered", client_id=self._my_id, node=self._node)

    def _register(self, conn: Any) -> Any:
        return wire.roundtrip(conn, [self._register_command()])[0]

    def _register_command(self) -> tuple[Any, ...]:
        k = self._keys
        stale = STALE_AFTER_TTLS * self._ttl_ms
        return register_command(
            live=k.live,
            gone=k.gone,
            worker_id=self._wid,
            client_id=self._my_id,
            node=self._node,
            stale_after_ms=stale,
        )

    def _record(self) -> str:
        return f"{self._wid} {self._my_id} {self._node}"

    def _roundtrip(self, cmds: list[tuple[Any, ...]]) -> list[Any]:
        return wire.roundtrip(self._connection(), cmds)

    def reset(self) -> None:
        """Forget the connection (after an error): the next check opens a new one, on the node
        that holds ``NS:workers`` then (it may have moved on a cluster)."""
        if self._client is not None:
            self._client.close()
        self._client = None
        self._watched, self._unsure, self._sure = {}, {}, {}

    # ---- checks ----------------------------------------------------------------------
    def check(self) -> Verdict:
        """One round trip (two when a peer is found dead): read the registered workers and the
        gone set, and ask the node which of the watched connections are still open."""
        self.next_check = time.monotonic() + self._interval
        try:
            return self._check()
        except BaseException:
            self.reset()
            raise

    def _check(self) -> Verdict:
        self._connection()  # (re)connects and registers first if needed
        k = self._keys
        watched = dict(self._watched)
        asked = sorted({*watched.values(), *self._unsure.values()})
        cmds: list[tuple[Any, ...]] = [
            ("ZRANGE", k.live, 0, -1, "WITHSCORES"),
            ("ZRANGE", k.gone, 0, -1, "WITHSCORES"),
        ]
        cmds.append(("TIME",))
        if asked:
            cmds.append(("CLIENT", "LIST", "ID", *asked))
        refresh = time.monotonic() >= self._next_refresh
        if refresh:
            cmds.append(self._register_command())
            self._next_refresh = time.monotonic() + self._ttl_ms / 3000
        replies = self._roundtrip(cmds)
        raw: Any = replies[0]
        records = {
            rec.worker: rec
            for m, score in pairs(raw)
            if (rec := parse_record(m, score)) is not None
        }
        gone_raw: Any = replies[1]
        t: Any = replies[2]
        now_ms = int(t[0]) * 1000 + int(t[1]) // 1000
        gone = {ids.text(w): float(score) for w, score in pairs(gone_raw)}
        present = connected(replies[3]) if asked else {}
        verdict = Verdict(gone=frozenset(w for w, until in gone.items() if until > now_ms))
        mine = records.get(self._wid)
        peers = frozenset(w for w in records if w != self._wid)
        if self._seen is not None and peers != self._seen:
            verdict.changed = True
        self._seen = peers
        if mine is None or mine.client_id != self._my_id:
            # our own record is gone or stale (expelled by a peer, or pruned): register again
            # next check, and trust nothing until then
            self._next_refresh = 0.0
            self._watched, self._unsure = {}, {}
            return verdict
        self._sort_peers(records, present)
        dead = dead_peers(watched, records, present)
        if dead:
            verdict.expelled = self._expel([records[w] for w in dead])
            verdict.gone = verdict.gone | frozenset(verdict.expelled)
            for w in verdict.expelled:
                self._watched.pop(w, None)
        return verdict

    def _sort_peers(self, records: dict[str, Record], present: dict[int, str]) -> None:
        """Which peers the next check watches. A record written after our connection
        registered is of this Redis; an older one is once its id has been seen connected
        under its worker's name (after a restart or failover an old id may be missing, or
        belong to someone else)."""
        for w, rec in records.items():
            if present.get(rec.client_id) == connection_name(w):
                self._sure[w] = rec.client_id
        self._watched, self._unsure = {}, {}
        for w, rec in records.items():
            if w == self._wid or rec.node != self._node:
                continue
            if rec.registered_ms >= self._registered_ms or self._sure.get(w) == rec.client_id:
                self._watched[w] = rec.client_id
            else:
                self._unsure[w] = rec.client_id

    def _expel(self, dead: list[Record]) -> list[str]:
        k = self._keys
        cmds = [
            expel_command(
                live=k.live,
                workers=k.workers,
                gone=k.gone,
                worker_id=rec.worker,
                record=rec.member,
                ttl_ms=self._ttl_ms,
            )
            for rec in dead
        ]
        replies = self._roundtrip(cmds)
        out = []
        for rec, ok in zip(dead, replies, strict=True):
            if int(ok) == 0:
                continue  # it registered again (alive after all) or left cleanly
            out.append(rec.worker)  # 2: another worker expelled it a moment earlier
            log.warning(
                "peer_dead",
                peer=rec.worker,
                client_id=rec.client_id,
                by_us=int(ok) == 1,
                reason="its liveness connection closed",
            )
        return out

    def leave(self) -> None:
        """Unregister on a clean exit, so peers rebalance at once."""
        if self._client is None:
            return
        try:
            self._roundtrip([("ZREM", self._keys.live, self._record())])
        finally:
            self._client.close()
            self._client = None


# ---- the worker's side -------------------------------------------------------------------
_last_warning = [0.0]
WARN_EVERY_S = 60.0


def open_liveness(settings: Settings, conn: Conn) -> Liveness:
    """The worker's ``Liveness``; its connection opens at the first check."""

    def open_client() -> tuple[redis.Redis, str]:
        timeout = min(1.0, conn.ttl / 4)
        client = node_client(
            settings,
            conn.r,
            conn.keys.workers,
            timeout=timeout,
            name=connection_name(settings.worker_id),
        )
        kw = client.connection_pool.connection_kwargs
        node = f"{kw.get('host')}:{kw.get('port')}" if conn.cluster else "-"
        return client, node

    return Liveness(
        settings.worker_id,
        conn.keys,
        settings.lease_ttl_ms,
        settings.liveness_check_ms,
        open_client,
    )


def check_peers(liveness: Liveness, own: Ownership) -> None:
    """One check; what it finds goes to ``own``. A failed check only skips the fast path."""
    try:
        verdict = liveness.check()
    except Exception as exc:  # the fast path must never stop the worker
        own.gone = frozenset()
        now = time.monotonic()
        if now - _last_warning[0] >= WARN_EVERY_S:
            _last_warning[0] = now
            log.warning("liveness_check_failed", error=f"{type(exc).__name__}: {str(exc)[:200]}")
        return
    own.gone = verdict.gone
    if verdict.expelled or verdict.changed:
        own.expedite()


def leave(liveness: Liveness) -> None:
    """Unregister on the way out; if Redis is unreachable the record is pruned later."""
    with contextlib.suppress(redis.RedisError, OSError):
        liveness.leave()
