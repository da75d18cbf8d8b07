"""Whether a Redis keeps every transaction of ours when it reloads its append-only file.

Redis up to the 8.6 line (redis/redis issue 14541, fixed by pull request 14545 in the 8.8
line; valkey issue 3983) replays a MULTI/EXEC block read back from the AOF as the ``default``
user and re-checks that user's ACL permissions at EXEC. Every script of ours that writes more
than once reaches the AOF as such a block (Redis replicates a script's effects), so where the
default user may not run those writes, Redis drops each of them on restart while single
writes survive: confirmed orders come back unconfirmed, inbox moves vanish, leases and
epochs go back. The shipped ACL file keeps ``default`` off (nobody can log in as it) but lets
it run every write on the namespace's keys, which is all the replay needs.

``check`` asks the server (``HELLO`` for its version, ``ACL DRYRUN default ...`` for each
kind of write our scripts leave in the AOF, on every master of a cluster). Only the admin
user may run ``ACL DRYRUN``; ``eventfleet init`` records its verdict in the namespace's meta
hash, and a worker, whose user may not ask, trusts that record for the same server version.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import redis
from redis import exceptions as rx
from redis.cluster import RedisCluster

from eventfleet.store.connection import is_cluster
from eventfleet.store.errors import classify
from eventfleet.store.keys import GROUP, Keys

FIXED_IN = (8, 8)
"""The first Redis release line whose EXEC skips the ACL check while loading the AOF."""

META_FIELD = "reload_check"
"""Field of the meta hash where ``eventfleet init`` records a passed check:
``<server> <version>`` of every node it checked."""

OVERRIDE_ENV = "EVENTFLEET_ALLOW_UNSAFE_RELOAD"

ISSUE = "redis/redis#14541"

SHARD = "u0"


def replayed_writes(keys: Keys) -> list[list[str]]:
    """One command of each kind our multi-write scripts leave inside MULTI/EXEC in the AOF
    (script effects as Redis propagates them: ``SET ... PXAT``, ``PEXPIREAT``, ``XCLAIM``
    for what XREADGROUP delivered, ``XGROUP CREATECONSUMER``, ...), on the keys they touch."""
    s = SHARD
    events, inbox = keys.events(s), keys.inbox(s)
    eid = "1-1"
    return [
        ["SELECT", "0"],
        ["SET", keys.lease(s), "w:1", "PXAT", "1"],
        ["PEXPIREAT", keys.lease(s), "1"],
        ["DEL", keys.lease(s)],
        ["INCR", keys.epoch(s)],
        ["SET", keys.snapshot(s), "x"],
        ["SET", keys.written(s), eid],
        ["COPY", keys.snapshot(s), keys.trim_base(s), "REPLACE"],
        ["XADD", events, eid, "event", "x"],
        ["XADD", keys.outcomes(s), eid, "x", "y"],
        ["XADD", keys.dlq(s), eid, "x", "y"],
        ["XACK", events, GROUP, eid],
        ["XCLAIM", events, GROUP, "c", "0", eid, "TIME", "1", "JUSTID", "LASTID", eid],
        ["XGROUP", "CREATECONSUMER", events, GROUP, "c"],
        ["XGROUP", "DELCONSUMER", events, GROUP, "c"],
        ["XGROUP", "SETID", events, GROUP, eid],
        ["XTRIM", events, "MINID", eid],
        ["XDEL", events, eid],
        ["LTRIM", inbox, "0", "0"],
        ["RPUSH", inbox, "x"],
        ["SADD", keys.poison(s), eid],
        ["HSET", keys.meta, "x", "y"],
        ["ZADD", keys.workers, "1", "w"],
        ["ZREM", keys.workers, "w"],
        ["ZREMRANGEBYSCORE", keys.workers, "0", "1"],
    ]


class UnsafeReload(Exception):
    """This Redis would drop transactions on reload; the message is one line naming why."""


class CannotCheck(Exception):
    """The caller may not run ``ACL DRYRUN``; ``servers`` are the nodes' ``<server> <version>``
    (``HELLO``, which any user may send), asked before that."""

    def __init__(self, why: str, servers: tuple[str, ...] = ()) -> None:
        super().__init__(why)
        self.servers = servers


@dataclass(frozen=True)
class Verdict:
    servers: tuple[str, ...]
    """``<server> <version>`` per node asked."""
    refused: tuple[str, ...]
    """The commands the default user may not run on a node with the bug (empty: safe)."""

    @property
    def safe(self) -> bool:
        return not self.refused

    @property
    def record(self) -> str:
        return ",".join(sorted(set(self.servers)))


def parse_version(text: str) -> tuple[int, int]:
    """Major and minor of a version string (missing parts are 0)."""
    major, minor = [*(int(p) for p in re.findall(r"\d+", text)[:2]), 0, 0][:2]
    return major, minor


def has_fix(server: str, version: str) -> bool:
    """Whether this server's EXEC skips the ACL check on AOF load (Redis 8.8 and later)."""
    return server == "redis" and parse_version(version) >= FIXED_IN


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _hello(node: redis.Redis) -> tuple[str, str]:
    reply: Any = node.execute_command("HELLO", "2")  # type: ignore[no-untyped-call]
    if not isinstance(reply, dict):
        flat = list(reply)
        reply = dict(zip(flat[::2], flat[1::2], strict=False))
    fields = {_text(k): v for k, v in reply.items()}
    return _text(fields.get("server", "redis")), _text(fields.get("version", "0"))


@contextmanager
def nodes(r: redis.Redis) -> Iterator[list[redis.Redis]]:
    """A client of its own per node (the one Redis, or every master of a cluster), with the
    same address, credentials and TLS as ``r``: redis-py changes how a client parses replies
    once HELLO went through it, so the question is never asked on ``r``'s connections."""
    if is_cluster(r):
        rc: RedisCluster = r  # type: ignore[assignment]
        found = [rc.get_redis_connection(n) for n in rc.get_primaries()]  # type: ignore[no-untyped-call]
        pools = [n.connection_pool for n in found if n is not None]
    else:
        pools = [r.connection_pool]
    probes = [
        redis.Redis(
            connection_pool=redis.ConnectionPool(
                connection_class=p.connection_class, **p.connection_kwargs
            )
        )
        for p in pools
    ]
    try:
        yield probes
    finally:
        for probe in probes:
            probe.close()


def check(r: redis.Redis, keys: Keys) -> Verdict:
    """Ask every node; raises ``CannotCheck`` when this user may not run ``ACL DRYRUN``."""
    refused: list[str] = []
    with nodes(r) as found:
        asked = [(node, *_hello(node)) for node in found]
        seen = tuple(f"{server} {version}" for _node, server, version in asked)
        try:
            for node, server, version in asked:
                if not has_fix(server, version):
                    refused += [c for c in _refused(node, keys) if c not in refused]
        except CannotCheck as exc:
            exc.servers = seen
            raise
    return Verdict(seen, tuple(refused))


def _refused(node: redis.Redis, keys: Keys) -> list[str]:
    refused: list[str] = []
    for command in replayed_writes(keys):
        try:
            reply = node.execute_command("ACL", "DRYRUN", "default", *command)  # type: ignore[no-untyped-call]
        except rx.NoPermissionError:
            raise CannotCheck("this Redis user may not run ACL DRYRUN") from None
        except rx.ResponseError as exc:  # NOPERM in another form, or no ACL DRYRUN (Redis 6)
            raise CannotCheck(f"ACL DRYRUN was refused: {str(exc)[:80]}") from None
        if _text(reply) != "OK":
            name = command[0] if command[0] != "XGROUP" else f"XGROUP {command[1]}"
            if name not in refused:
                refused.append(name)
    return refused


def problem(verdict: Verdict) -> str:
    """The one line naming what is wrong with an unsafe verdict."""
    shown = ", ".join(verdict.refused[:6]) + (" ..." if len(verdict.refused) > 6 else "")
    return (
        f"{verdict.record} drops MULTI/EXEC blocks from its append-only file on restart "
        f"unless the ACL default user may run them ({ISSUE}), and here it may not run {shown}: "
        "confirmed orders would be lost. Load the shipped deploy/redis/users.acl (its "
        "`user default off ... +@write +select` line) or give `default` those rights, "
        f"see docs/SECURITY.md; {OVERRIDE_ENV}=1 overrides this check"
    )


def record(r: redis.Redis, keys: Keys, verdict: Verdict) -> None:
    """Keep a passed check in the namespace's meta hash, for workers that may not ask."""
    r.hset(keys.meta, META_FIELD, verdict.record)


def recorded(r: redis.Redis, keys: Keys) -> str | None:
    """The passed check ``init`` recorded (a refused read raises ``FatalRedisError``)."""
    try:
        value: Any = r.hget(keys.meta, META_FIELD)
    except rx.ResponseError as exc:
        fatal = classify(exc)
        if fatal is None:
            raise
        raise fatal from None
    return None if value is None else _text(value)


def guard_init(r: redis.Redis, keys: Keys) -> Verdict:
    """At ``init``: check (as admin); raise ``UnsafeReload``, or return the passed verdict for
    ``record`` once the namespace exists."""
    try:
        verdict = check(r, keys)
    except CannotCheck as exc:
        raise UnsafeReload(
            f"cannot check whether {','.join(exc.servers)} keeps transactions across a restart "
            f"({ISSUE}): this Redis user lacks the permission to run ACL DRYRUN. Give the "
            "admin user +acl|dryrun (as the shipped deploy/redis/users.acl does), or set "
            f"{OVERRIDE_ENV}=1 if you know the default user may run every write"
        ) from None
    if not verdict.safe:
        raise UnsafeReload(problem(verdict))
    return verdict


def guard_worker(r: redis.Redis, keys: Keys) -> None:
    """At worker start: check directly when allowed, else trust init's record for the same
    servers. Raises ``UnsafeReload`` naming the problem."""
    try:
        verdict = check(r, keys)
    except CannotCheck as exc:  # raised only when a node lacks the upstream fix
        now = ",".join(sorted(set(exc.servers)))
        if recorded(r, keys) == now:
            return
        raise UnsafeReload(
            f"no passed reload check on record for {now} ({ISSUE}: Redis may drop "
            "transactions from its append-only file on restart): run `eventfleet init` as the "
            f"admin user to check and record it, or set {OVERRIDE_ENV}=1 if you know the ACL "
            "default user may run every write (docs/SECURITY.md)"
        ) from None
    if not verdict.safe:
        raise UnsafeReload(problem(verdict))
