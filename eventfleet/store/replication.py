"""Writes that count as done only once replicas have them (Redis ``WAIT``), on a single Redis
or on Redis Cluster. Used by ``produce --wait-replicas`` and ``EVENTFLEET_WAIT_REPLICAS``.

``WAIT`` counts the replicas that acknowledged the writes of its own connection. On a single
Redis it rides the pipeline's connection. On a cluster, redis-py's cluster pipeline may re-send
a failed or redirected command on another connection, where a ``WAIT`` would not cover it, so
the writes are grouped by master here and each group goes in a pipeline on a connection of
that master's own, ``WAIT`` last.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any, cast

import redis
from redis import exceptions as rx
from redis.cluster import RedisCluster

from eventfleet.store.connection import TRANSIENT, is_cluster


class ShortOfReplicas(rx.TimeoutError):
    """``WAIT`` counted too few replicas, or could not count them (a slot moved, the master
    is now a replica). Transient: the writes are sent again, and every write here is
    idempotent."""


class Recorder:
    """Stands in for a pipeline and records the writes queued on it, with the key of each."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, tuple[Any, ...], dict[str, Any]]] = []

    def xadd(self, name: str, fields: Any, *args: Any, **kwargs: Any) -> None:
        self.calls.append(("xadd", name, (name, fields, *args), kwargs))

    def rpushx(self, name: str, *values: Any) -> None:
        self.calls.append(("rpushx", name, (name, *values), {}))

    def xack(self, name: str, *args: Any) -> None:
        self.calls.append(("xack", name, (name, *args), {}))

    def execute_command(self, *args: Any, **kwargs: Any) -> None:
        key = args[3] if str(args[0]).upper() in ("EVAL", "EVALSHA") else args[1]
        self.calls.append(("execute_command", str(key), args, kwargs))


def write_replicated(
    r: redis.Redis, queue: Callable[[Any], None], replicas: int, timeout_ms: int
) -> list[Any]:
    """Run the writes ``queue(pipe)`` puts on a pipeline, then WAIT until ``replicas`` replicas
    of every master written to have them; return the writes' replies in order.

    Raises ``ShortOfReplicas`` when a WAIT counts fewer, a reply error as the pipeline would.
    """
    if not is_cluster(r):
        pipe = r.pipeline(transaction=False)
        queue(pipe)
        pipe.wait(replicas, timeout_ms)
        done = list(pipe.execute())
        _check(int(done[-1]), replicas, timeout_ms)
        return done[:-1]
    rc = cast(RedisCluster, r)
    rec = Recorder()
    queue(rec)
    groups: dict[str, tuple[Any, list[int]]] = {}
    for i, (_method, key, _args, _kwargs) in enumerate(rec.calls):
        node = rc.get_node_from_key(key)  # type: ignore[no-untyped-call]
        groups.setdefault(node.name, (node, []))[1].append(i)
    replies: list[Any] = [None] * len(rec.calls)
    for node, idx in groups.values():
        pipe = rc.get_redis_connection(node).pipeline(transaction=False)
        for i in idx:
            method, _key, args, kwargs = rec.calls[i]
            getattr(pipe, method)(*args, **kwargs)
        pipe.wait(replicas, timeout_ms)
        try:
            got = list(pipe.execute(raise_on_error=False))
        except TRANSIENT:
            _refresh(rc)  # the master may have failed over
            raise
        for reply in got:
            if isinstance(reply, rx.ResponseError):
                moved = isinstance(reply, rx.AskError | rx.ReadOnlyError) or (
                    "replica" in str(reply)  # WAIT on a master demoted to replica
                )
                if not moved:
                    raise reply
                _refresh(rc)
                raise ShortOfReplicas(f"the slots of {node.name} moved during the writes")
        _check(int(got[-1]), replicas, timeout_ms)
        for i, reply in zip(idx, got, strict=False):
            replies[i] = reply
    return replies


def _check(acked: int, replicas: int, timeout_ms: int) -> None:
    if acked < replicas:
        raise ShortOfReplicas(
            f"only {acked} of {replicas} replicas acknowledged the writes within {timeout_ms} ms"
        )


def _refresh(rc: RedisCluster) -> None:
    with contextlib.suppress(*TRANSIENT, rx.RedisClusterException):
        rc.nodes_manager.initialize()
