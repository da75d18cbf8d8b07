"""The worker's shard I/O is chosen once, from the Redis and the settings, and the WAIT path
(``Replicated``) acks a batch only once its effects are on the replicas (real Redis servers:
a primary and, for the second test, its replica)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from eventfleet.ledger.codec import charge_text
from eventfleet.ledger.state import ShardState
from eventfleet.local.redisserver import LocalRedis
from eventfleet.store.keys import EVENT_FIELD, GROUP, Keys
from eventfleet.store.replication import ShortOfReplicas
from eventfleet.store.settings import Settings
from eventfleet.worker.effects import Effects
from eventfleet.worker.loop import Worker
from eventfleet.worker.owned import Owned
from eventfleet.worker.shardio import Replicated, ShardWrite
from eventfleet.worker.singleio import SingleIO
from eventfleet.worker.writebehind import LOST, Waited, WriteBehind
from tests.fleet_utils import setup_namespace

NS = "shardio"


@pytest.fixture
def primary(own_redis: LocalRedis) -> Iterator[redis.Redis]:
    r = redis.Redis.from_url(own_redis.url)
    yield r
    r.close()
    r.connection_pool.disconnect()


def one_batch(r: redis.Redis, worker: Worker, ttl_s: float) -> tuple[ShardWrite, str]:
    """An entry of i0 delivered to the worker (pending), applied: a charge for u0 to write."""
    stream = Keys(NS).events("i0")
    eid = r.xadd(stream, {EVENT_FIELD: "{}"})
    r.xreadgroup(GROUP, "w", {stream: ">"})
    o = Owned("i0", 1, "w:1", ShardState("i0"), time.monotonic() + ttl_s, 0.0, 0.0)
    effects = Effects()
    effects.emits["u0"] = [charge_text("o-1", 1, "sku", 1, 10, None, "i0", 1)]
    return ShardWrite(o, effects, [eid], o.state.last_id), stream


def test_one_redis_writes_behind_the_next_apply(primary: redis.Redis) -> None:
    counts = setup_namespace(primary, NS, 1, 1)
    worker = Worker(Settings(namespace=NS), primary, counts)
    assert isinstance(worker.io, SingleIO) and isinstance(worker.writes, WriteBehind)


def test_with_wait_replicas_a_batch_is_acked_once_a_replica_has_its_effects(
    primary: redis.Redis,
) -> None:
    counts = setup_namespace(primary, NS, 1, 1)
    replica_server = LocalRedis().start()
    replica = redis.Redis.from_url(replica_server.url)
    try:
        kw: Any = primary.connection_pool.connection_kwargs
        primary.config_set("repl-diskless-sync-delay", 0)
        replica.replicaof(kw["host"], kw["port"])
        for _ in range(600):  # each WAIT blocks in Redis until the replica caught up, or 50 ms
            if primary.wait(1, 50) >= 1:
                break
        else:
            raise AssertionError("the replica never caught up")
        settings = Settings(namespace=NS, wait_replicas=1, lease_ttl_ms=2000)
        worker = Worker(settings, primary, counts)
        assert isinstance(worker.io, Replicated) and isinstance(worker.writes, Waited)
        w, stream = one_batch(primary, worker, 2.0)
        worker.writes.write([w])
        assert primary.xpending(stream, GROUP)["pending"] == 0
        # on the replica before the ack; a WAIT that fell short sends the effects again, which
        # the receiver drops by their seq: the same charge, once or more
        entries: Any = replica.xrange(Keys(NS).events("u0"))
        assert entries and len({fields[EVENT_FIELD] for _eid, fields in entries}) == 1
    finally:
        replica.close()
        replica_server.stop(kill=True)  # a throwaway: nothing to save
        replica_server.close()


def test_with_wait_replicas_and_none_there_nothing_is_acked(primary: redis.Redis) -> None:
    counts = setup_namespace(primary, NS, 1, 1)
    settings = Settings(namespace=NS, wait_replicas=1, lease_ttl_ms=400)
    worker = Worker(settings, primary, counts)
    lost: list[tuple[str, str]] = []
    worker.ownership.lose = lambda o, why: lost.append((o.name, why))  # type: ignore[method-assign]
    worker.writes = Waited(worker.io, worker.conn, worker.ownership.lose, worker._written)
    w, stream = one_batch(primary, worker, 0.3)
    with pytest.raises(ShortOfReplicas):
        worker.writes.write([w])
    assert lost == [("i0", LOST)]
    assert primary.xpending(stream, GROUP)["pending"] == 1, "acked without its replicas"


def test_scripts_flushed_before_a_write_are_loaded_and_the_write_sent_once(
    primary: redis.Redis,
) -> None:
    """SingleIO sends scripts by SHA without asking Redis first: after SCRIPT FLUSH (or a
    restart) the write's replies are NOSCRIPT; the scripts are loaded, the write is sent again,
    its effects land once and the batch is acked."""
    counts = setup_namespace(primary, NS, 1, 1)
    worker = Worker(Settings(namespace=NS), primary, counts)
    assert isinstance(worker.io, SingleIO)
    w, stream = one_batch(primary, worker, 5.0)
    worker.io.write([w])
    primary.script_flush()
    w2, _ = one_batch(primary, worker, 5.0)
    w2.effects.emits["u0"] = [charge_text("o-2", 1, "sku", 1, 10, None, "i0", 2)]
    worker.io.write([w2])
    assert primary.xpending(stream, GROUP)["pending"] == 0
    entries: Any = primary.xrange(Keys(NS).events("u0"))
    texts = [fields[EVENT_FIELD] for _eid, fields in entries]
    assert len(texts) == 2 and len(set(texts)) == 2, texts
