"""Effects written behind the next batch's apply (worker/writebehind.py): one write in flight,
waited for before the next, and a failed write loses its shards and the ones applied on top."""

from __future__ import annotations

import time

import pytest
import redis

from ledger.state import ShardState
from store.settings import Settings
from worker.conn import Conn
from worker.owned import Owned
from worker.writebehind import LOST, WriteBehind


def owned(name: str) -> Owned:
    return Owned(name, 1, "w:1", ShardState(name), time.monotonic() + 5, 0.0, 0.0)


def test_writes_run_one_at_a_time_in_order(r: redis.Redis, namespace: str) -> None:
    conn = Conn(Settings(namespace=namespace), r)
    lost: list[str] = []
    wb = WriteBehind(conn, lambda o, why: lost.append(o.name))
    key = f"{namespace}:order"
    for i in range(20):
        wb.settle()
        wb.send([owned("u0")], lambda i=i: r.rpush(key, i) and None, time.monotonic() + 5)
    wb.settle()
    assert [int(v) for v in r.lrange(key, 0, -1)] == list(range(20))
    assert lost == []


def test_a_failed_write_loses_its_shards_and_those_applied_on_top(
    r: redis.Redis, namespace: str
) -> None:
    conn = Conn(Settings(namespace=namespace, lease_ttl_ms=1000), r)
    lost: list[tuple[str, str]] = []
    wb = WriteBehind(conn, lambda o, why: lost.append((o.name, why)))

    def refused() -> None:
        raise redis.ConnectionError("the connection went away")

    wb.send([owned("u0"), owned("i1")], refused, time.monotonic() + 0.3)
    with pytest.raises(redis.ConnectionError):
        wb.settle(also=[owned("u2")])
    assert lost == [("u0", LOST), ("i1", LOST), ("u2", LOST)]
    wb.settle()  # nothing in flight any more
    wb.send([owned("u3")], refused, time.monotonic() + 0.3)
    wb.settle_quietly()  # handled: lost, not raised
    assert lost[-1] == ("u3", LOST)
