"""``eventfleet.Client`` and ``eventfleet.aio.Client`` against a real Redis and a real worker:
receipts, outcomes, idempotency, files with a source name, and the error hierarchy."""

from __future__ import annotations

import asyncio
import http.server
import inspect
import json
import threading
import time
from pathlib import Path

import pytest
import redis

import eventfleet
from eventfleet import aio
from eventfleet.ledger.shards import ShardCounts, item_shard, user_shard
from eventfleet.local.fleet import LocalFleet
from eventfleet.local.redisserver import LocalRedis, free_port
from eventfleet.ops.reader import state_all
from eventfleet.ops.status import is_idle
from eventfleet.ops.verify import verify
from eventfleet.store.keys import Keys
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


def inbox_stamps(r: redis.Redis, ns: str, shard: str) -> list[tuple[str, int]]:
    """(source, seq) of every event waiting in ``shard``'s inbox, in order."""
    out = []
    for raw in r.lrange(Keys(ns).inbox(shard), 0, -1):
        try:
            doc = json.loads(raw)
        except ValueError:
            continue
        if isinstance(doc, dict) and "source" in doc:
            out.append((doc["source"], doc["seq"]))
    return out


def test_publish_many_numbers_progress_and_pacing(
    redis_server: LocalRedis, r: redis.Redis, namespace: str
) -> None:
    """What `produce file --source` and `produce load` use: a file's line numbers as seqs,
    per-shard numbering streamed, a progress callback per chunk, and a paced rate."""
    counts = setup_namespace(r, namespace)
    shard = user_shard(5, counts)
    rows = [{"type": "topup", "user_id": 5, "amount": n} for n in range(1, 4)]
    seen: list[int] = []
    with eventfleet.Client.from_url(redis_server.url, namespace=namespace) as client:
        done = client.publish_many(rows, source="lines", seqs=[2, 7, 9], progress=seen.append)
        assert (done.count, seen, done.last[shard].seq) == (3, [3], 9)
        by_shard = client.publish_many(iter(rows), source="load", seqs="shard")
        assert by_shard.last[shard].seq == 3
        client.publish_many(rows, source="pos")
        stamps = inbox_stamps(r, namespace, shard)
        assert [s for s in stamps if s[0] == "p:lines"] == [("p:lines", n) for n in (2, 7, 9)]
        assert [n for src, n in stamps if src in ("p:load", "p:pos")] == [1, 2, 3, 1, 2, 3]
        with pytest.raises(eventfleet.InvalidEvent):
            client.publish_many(rows, seqs=[1, 2, 3])  # numbers need a source
        with pytest.raises(eventfleet.InvalidEvent):
            client.publish_many(rows, source="x", seqs=[1, 1, 2])  # they must grow per shard
        chunks: list[int] = []
        rows40 = [{"type": "topup", "user_id": u, "amount": 1} for u in range(1, 41)]
        start = time.monotonic()
        paced = client.publish_many(rows40, rate=400, progress=chunks.append)  # 20 per chunk
        assert time.monotonic() - start >= 39 / 400 and paced.count == 40
        assert chunks == [20, 20]


def test_publish_one_order_callbacks_wait_replicas_and_unavailable(
    redis_server: LocalRedis, r: redis.Redis, namespace: str
) -> None:
    counts = setup_namespace(r, namespace)
    with eventfleet.Client.from_url(redis_server.url, namespace=namespace) as client:
        receipt = client.publish({"type": "topup", "user_id": 3, "amount": 5}, key="req-3")
        assert receipt.shard == user_shard(3, counts) and receipt.seq == 1
        with pytest.raises(eventfleet.InvalidEvent):
            client.publish({"type": "order", "order_id": "o", "user_id": 1, "item_id": "a",
                            "qty": 1}, key="k")  # fmt: skip
        published: list[eventfleet.Receipt] = []
        with pytest.raises(eventfleet.WaitTimeout) as timed_out:  # no worker runs
            client.order(user=3, item="x", qty=1, wait=0.2, on_published=published.append)
        assert timed_out.value.receipt == published[0]
        assert published[0].shard == item_shard("x", counts)
    replicated = eventfleet.Client(r, namespace, wait_replicas=2)
    assert replicated.wait_replicas == 2 and replicated._new_producer("p:n").wait_replicas == 2
    down = f"redis://127.0.0.1:{free_port()}/0"
    with pytest.raises(eventfleet.Unavailable, match=r"^cannot reach Redis at redis://127"):
        eventfleet.Client.from_url(down, namespace=namespace)


def test_the_asyncio_client_takes_the_same_arguments(
    redis_server: LocalRedis, r: redis.Redis, namespace: str
) -> None:
    for name in ("publish", "publish_many", "topup", "add_item", "order", "balance", "item"):
        sync_args = inspect.signature(getattr(eventfleet.Client, name)).parameters
        assert list(sync_args) == list(inspect.signature(getattr(aio.Client, name)).parameters)
    counts = setup_namespace(r, namespace)
    shard = user_shard(5, counts)
    rows = [{"type": "topup", "user_id": 5, "amount": n} for n in range(1, 4)]

    async def main() -> None:
        async with aio.Client.from_url(redis_server.url, namespace=namespace) as client:
            seen: list[int] = []
            done = await client.publish_many(rows, source="a-lines", seqs=[2, 7, 9],
                                             progress=seen.append)  # fmt: skip
            assert (done.count, seen, done.last[shard].seq) == (3, [3], 9)
            await client.publish_many(rows, source="a-load", seqs="shard", rate=1000)
            with pytest.raises(eventfleet.InvalidEvent):
                await client.publish_many(rows, source="a-x", seqs=[1, 1, 2])
            with pytest.raises(eventfleet.InvalidEvent):
                await client.publish_many(rows, seqs=[1, 2, 3])
            one = await client.publish({"type": "topup", "user_id": 5, "amount": 1})
            assert one.shard == shard
            published: list[eventfleet.Receipt] = []
            with pytest.raises(eventfleet.WaitTimeout) as timed_out:  # no worker runs
                await client.order(user=5, item="x", qty=1, wait=0.2,
                                   on_published=published.append)  # fmt: skip
            assert timed_out.value.receipt == published[0]

    asyncio.run(main())
    stamps = inbox_stamps(r, namespace, shard)
    assert [n for src, n in stamps if src == "p:a-lines"] == [2, 7, 9]
    assert [n for src, n in stamps if src == "p:a-load"] == [1, 2, 3]


def test_concurrent_publishes_of_one_client_are_all_applied(
    redis_server: LocalRedis, r: redis.Redis, namespace: str, fleet: ShardCounts
) -> None:
    """One client's events share its source: sent out of seq order, the shard would drop the
    earlier ones as repeats. Threads (sync) and tasks (asyncio) publishing at once lose none."""
    client = eventfleet.Client.from_url(redis_server.url, namespace=namespace)

    def burst() -> None:
        for _ in range(40):
            client.topup(user=21, amount=1)

    threads = [threading.Thread(target=burst) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    client.close()

    async def main() -> None:
        async with aio.Client.from_url(redis_server.url, namespace=namespace) as ac:
            await asyncio.gather(*(ac.topup(user=22, amount=1) for _ in range(240)))

    asyncio.run(main())
    settle(r, namespace, fleet)
    assert balance(r, namespace, fleet, 21) == 240
    assert balance(r, namespace, fleet, 22) == 240


def test_asyncio_bulk_and_single_publishes_interleave_without_loss(
    redis_server: LocalRedis, r: redis.Redis, namespace: str, fleet: ShardCounts
) -> None:
    """The asyncio client starts a send while the one before it is still out (a bulk publish
    stamps its next chunk meanwhile), yet sends leave in stamp order: single top-ups racing
    two bulk publishes of small chunks on one client lose none to the seq check."""
    rows = [{"type": "topup", "user_id": 23, "amount": 1} for _ in range(300)]

    async def main() -> None:
        async with aio.Client.from_url(redis_server.url, namespace=namespace) as ac:
            await asyncio.gather(
                ac.publish_many(rows, rate=3000.0),  # chunks of 150: two sends
                ac.publish_many(rows[:100]),
                *(ac.topup(user=23, amount=1) for _ in range(100)),
            )

    asyncio.run(main())
    settle(r, namespace, fleet)
    assert balance(r, namespace, fleet, 23) == 500


def test_publish_each_sends_events_together_with_a_receipt_each(
    redis_server: LocalRedis, r: redis.Redis, namespace: str, fleet: ShardCounts
) -> None:
    """``aio.Client.publish_each`` (the HTTP API's coalesced sends): each event its own
    receipt, seqs numbered on from the client's single publishes, a key applied once however
    often it is sent, a bad key refused before anything is sent; racing single top-ups on the
    same client lose none."""
    from eventfleet.client.errors import InvalidEvent
    from eventfleet.ledger.events import Order, Topup

    async def main() -> None:
        async with aio.Client.from_url(redis_server.url, namespace=namespace) as ac:
            first = await ac.topup(user=24, amount=1)
            each = [(Topup(user_id=24, amount=1), f"e-{i}") for i in range(5)]
            receipts = await ac.publish_each([*each, (Topup(user_id=25, amount=1), None)])
            assert [x.seq for x in receipts[:5]] == [first.seq + i for i in range(1, 6)]
            assert {x.source for x in receipts} == {first.source}
            assert receipts[5].shard == user_shard(25, fleet)
            again = await asyncio.gather(
                ac.publish_each(each[:3]), *(ac.topup(user=24, amount=1) for _ in range(20))
            )
            assert len(again[0]) == 3
            with pytest.raises(InvalidEvent):
                await ac.publish_each(
                    [(Topup(user_id=24, amount=1), "ok"), (Topup(user_id=24, amount=1), "bad key!")]
                )
            order = Order(order_id="pe-1", user_id=24, item_id="sku-pe", qty=1)
            with pytest.raises(InvalidEvent):
                await ac.publish_each([(order, "k")])

    asyncio.run(main())
    settle(r, namespace, fleet)
    assert balance(r, namespace, fleet, 24) == 1 + 5 + 20
    assert balance(r, namespace, fleet, 25) == 1
