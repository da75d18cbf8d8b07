"""The liveness scripts (register.lua, expel.lua: worker/liveness.py) run directly as the
shipped worker user on the liveness connection's EVAL commands."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from eventfleet.store.keys import Keys
from eventfleet.worker.scripts import expel_command, register_command
from tests.secure_redis import connect

K = Keys("eventfleet")


@pytest.fixture
def clients(port: int) -> Iterator[tuple[redis.Redis, redis.Redis]]:
    root, worker = connect(port, "root"), connect(port, "worker")
    root.delete(K.live, K.gone, K.workers)
    yield root, worker
    root.close()
    worker.close()


def test_register_and_expel(clients: tuple[redis.Redis, redis.Redis]) -> None:
    root, worker = clients

    def register(client_id: int, wid: str = "w1") -> int:
        cmd = register_command(
            live=K.live, gone=K.gone, worker_id=wid, client_id=client_id, node="-",
            stale_after_ms=60_000,
        )  # fmt: skip
        return int(worker.execute_command(*cmd))

    def expel(wid: str, record: str) -> int:
        cmd = expel_command(
            live=K.live, workers=K.workers, gone=K.gone, worker_id=wid, record=record,
            ttl_ms=5000,
        )  # fmt: skip
        return int(worker.execute_command(*cmd))

    root.zadd(K.live, {"old 1 -": 1})  # not refreshed for long: pruned
    root.zadd(K.gone, {"w1": 10**15})
    now = register(7)
    assert root.zrange(K.live, 0, -1, withscores=True) == [("w1 7 -", now)]
    assert root.zscore(K.gone, "w1") is None  # back: no longer gone
    register(8)  # a new connection replaces the record
    register(3, "w2")
    assert root.zrange(K.live, 0, -1) == ["w1 8 -", "w2 3 -"]
    root.zadd(K.workers, {"w1": 10**15, "w2": 10**15})
    assert expel("w1", "w1 7 -") == 0  # its record changed: alive after all
    assert root.zscore(K.workers, "w1") is not None
    assert expel("w1", "w1 8 -") == 1
    assert root.zrange(K.live, 0, -1) == ["w2 3 -"]
    assert root.zscore(K.workers, "w1") is None
    assert now < int(root.zscore(K.gone, "w1") or 0) <= now + 60_000
    assert expel("w1", "w1 8 -") == 2  # another worker expelled it a moment earlier
