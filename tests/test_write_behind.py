"""Effects written behind the next batch's apply (worker/writebehind.py): one write in flight,
waited for before the next, a failed write loses its shards and the ones applied on top, and
a batch is acked only once its effects are written."""

from __future__ import annotations

import time
from typing import Any

import pytest
import redis

from eventfleet.ledger.codec import charge_text
from eventfleet.ledger.state import ShardState
from eventfleet.local.redisserver import LocalRedis
from eventfleet.store.keys import EVENT_FIELD, GROUP, Keys
from eventfleet.store.settings import Settings
from eventfleet.worker.conn import Conn
from eventfleet.worker.effects import Effects
from eventfleet.worker.loop import Worker
from eventfleet.worker.owned import Owned
from eventfleet.worker.shardio import WRITTEN, ShardWrite, Status
from eventfleet.worker.writebehind import LOST, WriteBehind
from tests.fleet_utils import setup_namespace


def owned(name: str) -> Owned:
    return Owned(name, 1, "w:1", ShardState(name), time.monotonic() + 5, 0.0, 0.0)


def batch_of(*shards: Owned) -> list[ShardWrite]:
    return [ShardWrite(o, Effects(), [b"0-1"], o.state.last_id) for o in shards]


class Pushes:
    """A shard I/O whose write pushes each shard's name to a list in Redis, or fails."""

    def __init__(self, r: redis.Redis, key: str, fail: bool = False) -> None:
        self.r, self.key, self.fail = r, key, fail

    def write(self, batch: list[ShardWrite]) -> list[Status]:
        if self.fail:
            raise redis.ConnectionError("the connection went away")
        self.r.rpush(self.key, *(w.o.name for w in batch))
        return [(WRITTEN, None)] * len(batch)


def test_writes_run_one_at_a_time_in_order(r: redis.Redis, namespace: str) -> None:
    conn = Conn(Settings(namespace=namespace), r)
    lost: list[str] = []
    written: list[str] = []
    key = f"{namespace}:order"
    wb = WriteBehind(
        Pushes(r, key),  # type: ignore[arg-type]
        conn,
        lambda o, why: lost.append(o.name),
        lambda batch, status: written.extend(w.o.name for w in batch),
    )
    for i in range(20):
        wb.write(batch_of(owned(f"u{i}")))
    wb.settle()
    assert [v.decode() for v in r.lrange(key, 0, -1)] == [f"u{i}" for i in range(20)]
    assert written == [f"u{i}" for i in range(20)]
    assert lost == []


def test_a_failed_write_loses_its_shards_and_those_applied_on_top(
    r: redis.Redis, namespace: str
) -> None:
    conn = Conn(Settings(namespace=namespace, lease_ttl_ms=1000), r)
    lost: list[tuple[str, str]] = []
    refused = Pushes(r, f"{namespace}:never", fail=True)
    wb = WriteBehind(
        refused,  # type: ignore[arg-type]
        conn,
        lambda o, why: lost.append((o.name, why)),
        lambda batch, status: None,
    )

    def soon(o: Owned) -> Owned:
        o.deadline = time.monotonic() + 0.3
        return o

    wb.write(batch_of(soon(owned("u0")), soon(owned("i1"))))
    with pytest.raises(redis.ConnectionError):
        wb.write(batch_of(owned("u2")))  # settles the one in flight first
    assert lost == [("u0", LOST), ("i1", LOST), ("u2", LOST)]
    wb.settle()  # nothing in flight any more
    wb.write(batch_of(soon(owned("u3"))))
    wb.settle_quietly()  # handled: lost, not raised
    assert lost[-1] == ("u3", LOST)
    assert r.llen(f"{namespace}:never") == 0


def test_a_batch_is_acked_only_once_its_effects_are_written(own_redis: LocalRedis) -> None:
    """Redis full: the effects (scripts that append) are refused, an ``XACK`` never is (it frees
    memory). The entries must stay pending: a warm standby folds acked entries, and a takeover
    from its copy would never emit their effects again."""
    r = redis.Redis.from_url(own_redis.url)
    try:
        _acked_only_when_written(r)
    finally:
        r.close()
        r.connection_pool.disconnect()


def _acked_only_when_written(r: redis.Redis) -> None:
    ns = "ackorder"
    keys = Keys(ns)
    counts = setup_namespace(r, ns, 1, 1)
    stream = keys.events("i0")
    eid = r.xadd(stream, {EVENT_FIELD: "{}"})
    r.xreadgroup(GROUP, "w", {stream: ">"})  # delivered to the worker: pending
    worker = Worker(Settings(namespace=ns, lease_ttl_ms=1000), r, counts)
    o = Owned("i0", 1, "w:1", ShardState("i0"), time.monotonic() + 0.5, 0.0, 0.0)
    effects = Effects()
    effects.emits["u0"] = [charge_text("o-1", 1, "sku", 1, 10, None, "i0", 1)]
    r.config_set("maxmemory", 1)  # every write that needs memory is refused from here on
    try:
        worker.writes.write([ShardWrite(o, effects, [eid], o.state.last_id)])
        with pytest.raises(redis.OutOfMemoryError):
            worker.writes.settle()
        pending: Any = r.xpending(stream, GROUP)
        assert pending["pending"] == 1, "acked although its effects were refused"
    finally:
        r.config_set("maxmemory", 0)
    # and once Redis takes writes again, effects then ack: nothing pending, the charge in u0
    o2 = Owned("i0", 1, "w:1", ShardState("i0"), time.monotonic() + 5, 0.0, 0.0)
    worker.writes.write([ShardWrite(o2, effects, [eid], o2.state.last_id)])
    worker.writes.settle()
    assert r.xpending(stream, GROUP)["pending"] == 0
    assert r.xlen(keys.events("u0")) == 1
