"""``eventfleet.Client`` and ``eventfleet.aio.Client`` against a real Redis and a real worker:
receipts, outcomes, idempotency, files with a source name, and the error hierarchy."""

from __future__ import annotations

import asyncio
import http.server
import threading
from pathlib import Path

import pytest
import redis

import eventfleet
from eventfleet import aio
from eventfleet.local.fleet import LocalFleet
from eventfleet.local.redisserver import LocalRedis
from eventfleet.ops.reader import state_all
from eventfleet.ops.status import is_idle
from eventfleet.ops.verify import verify
from ledger.shards import ShardCounts
from store.keys import Keys
from tests.fleet_utils import make_fleet, setup_namespace
from tests.helpers import wait_for


def balance(r: redis.Redis, ns: str, counts: ShardCounts, user: int) -> int:
    users = state_all(r, Keys(ns), counts)["users"]
    return int(users.get(str(user), {"balance": 0})["balance"])


def settle(r: redis.Redis, ns: str, counts: ShardCounts) -> None:
    wait_for(lambda: is_idle(r, Keys(ns), counts), 60, "the fleet to become idle")


@pytest.fixture
def fleet(
    redis_server: LocalRedis, r: redis.Redis, namespace: str, tmp_path: Path,
    fleet_factory: list[LocalFleet],
) -> ShardCounts:  # fmt: skip
    counts = setup_namespace(r, namespace)
    make_fleet(redis_server.url, namespace, tmp_path, fleet_factory).start()
    return counts


def test_the_sync_client_publishes_waits_and_is_idempotent(
    redis_server: LocalRedis, r: redis.Redis, namespace: str, fleet: ShardCounts
) -> None:
    with eventfleet.Client.from_url(redis_server.url, namespace=namespace) as client:
        item = client.add_item(item="sku-1", count=5, price=100)
        assert item.shard.startswith("i") and item.seq == 1 and item.source.startswith("p:")
        first = client.topup(user=7, amount=250, key="invoice-1")
        again = client.topup(user=7, amount=250, key="invoice-1")
        assert first.shard == again.shard and again.seq == first.seq + 1
        result = client.order(user=7, item="sku-1", qty=2, order_id="o-1", wait=30)
        assert isinstance(result, eventfleet.OrderResult)
        assert (result.status, result.amount, result.ok) == ("confirmed", 200, True)
        assert result.receipt.shard == item.shard
        poor = client.order(user=7, item="sku-1", qty=1, order_id="o-2", wait=30)
        assert (poor.status, poor.reason) == ("rejected", "insufficient_funds")
        dup = client.order(user=7, item="sku-1", qty=1, order_id="o-1", wait=30)
        assert dup.status == "duplicate"
        receipt = client.order(user=7, item="sku-1", qty=1)
        assert isinstance(receipt, eventfleet.Receipt)
    settle(r, namespace, fleet)
    assert balance(r, namespace, fleet, 7) == 50  # one top-up of 250, one charge of 200
    assert verify(r, Keys(namespace), fleet).ok


def test_publish_many_with_a_source_name_applies_each_event_once(
    redis_server: LocalRedis, r: redis.Redis, namespace: str, fleet: ShardCounts
) -> None:
    rows = [{"type": "topup", "user_id": u, "amount": 10} for u in range(1, 41)]
    with eventfleet.Client.from_url(redis_server.url, namespace=namespace) as client:
        done = client.publish_many(rows, source="nightly")
        assert done.count == 40 and done.source == "p:nightly"
        assert {x.shard for x in done.receipts()} == set(done.last)
        assert sum(x.seq for x in done.receipts()) > 0
        client.publish_many(rows, source="nightly")  # a re-run: nothing twice
        client.publish_many(rows[:3])  # an anonymous source: applied again
    settle(r, namespace, fleet)
    assert [balance(r, namespace, fleet, u) for u in (1, 2, 3, 4, 40)] == [20, 20, 20, 10, 10]


def test_errors_are_the_clients_own(
    redis_server: LocalRedis, r: redis.Redis, namespace: str
) -> None:
    with pytest.raises(eventfleet.NotInitialised):
        eventfleet.Client.from_url(redis_server.url, namespace=namespace)
    counts = setup_namespace(r, namespace)
    client = eventfleet.Client.from_url(redis_server.url, namespace=namespace)
    before = sum(int(r.llen(Keys(namespace).inbox(s))) for s in counts.all_shards())
    for bad in (
        lambda: client.topup(user=1, amount=0),
        lambda: client.topup(user=1, amount=5, key="not a key"),
        lambda: client.add_item(item="", count=1, price=1),
        lambda: client.order(user=1, item="x", qty=-1),
        lambda: client.publish_many([{"type": "topup", "user_id": 1}]),
        lambda: client.publish_many([{"type": "charge"}]),
        lambda: client.publish_many([], source="bad name"),
    ):
        with pytest.raises(eventfleet.InvalidEvent):
            bad()
    after = sum(int(r.llen(Keys(namespace).inbox(s))) for s in counts.all_shards())
    assert after == before, "a refused event was published"
    with pytest.raises(eventfleet.WaitTimeout):  # no worker runs
        client.order(user=1, item="x", qty=1, wait=0.3)
    client.close()
    assert issubclass(eventfleet.WaitTimeout, eventfleet.EventfleetError)


def test_a_url_that_is_not_redis_or_does_not_answer() -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with pytest.raises(eventfleet.ConfigurationError):
            eventfleet.Client.from_url(f"redis://127.0.0.1:{server.server_address[1]}/0")
        with pytest.raises(eventfleet.ConfigurationError):
            asyncio.run(
                aio.Client.from_url(f"redis://127.0.0.1:{server.server_address[1]}/0").topup(
                    user=1, amount=1
                )
            )
    finally:
        server.shutdown()
        server.server_close()
    with pytest.raises(eventfleet.ConfigurationError):
        eventfleet.Client.from_url("http://127.0.0.1:1/0")


def test_the_asyncio_client_has_the_same_methods(
    redis_server: LocalRedis, r: redis.Redis, namespace: str, fleet: ShardCounts
) -> None:
    public = {n for n in dir(eventfleet.Client) if not n.startswith("_")}
    assert public - {"close"} <= {n for n in dir(aio.Client) if not n.startswith("_")}

    async def main() -> None:
        async with aio.Client.from_url(redis_server.url, namespace=namespace) as client:
            await client.add_item(item="sku-9", count=3, price=50)
            first = await client.topup(user=9, amount=100, key="k-9")
            await client.topup(user=9, amount=100, key="k-9")
            results = await asyncio.gather(
                *(client.order(user=9, item="sku-9", qty=1, wait=30) for _ in range(3))
            )
            assert sorted(x.status for x in results) == ["confirmed", "confirmed", "rejected"]
            assert first.shard.startswith("u")
            done = await client.publish_many(
                [{"type": "topup", "user_id": 11, "amount": 5}] * 3, source="batch-1"
            )
            assert done.count == 3
            await client.publish_many(
                [{"type": "topup", "user_id": 11, "amount": 5}] * 3, source="batch-1"
            )
            with pytest.raises(eventfleet.InvalidEvent):
                await client.topup(user=9, amount=-1)

    asyncio.run(main())
    settle(r, namespace, fleet)
    assert balance(r, namespace, fleet, 9) == 0  # 100 once; two orders of 50
    assert balance(r, namespace, fleet, 11) == 15
    assert verify(r, Keys(namespace), fleet).ok
