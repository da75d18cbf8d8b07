"""The clients learn grown shard counts by themselves (docs/DESIGN-DECISIONS.md section 35):
``eventfleet.aio.Client`` re-reads them between sends and regrows its routing, a chunk already
stamped keeping its inboxes; both clients' reads route with the counts they learnt; a shrink
or a count that is not a multiple is ignored. Against the session's Redis (no worker: what
reaches each inbox is what is checked), and ``grown`` and ``rerouted`` as pure functions."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import pytest
import redis
import structlog
from hypothesis import given
from hypothesis import strategies as st

import eventfleet
from eventfleet import aio
from eventfleet.client.texts import prepared, rerouted
from eventfleet.ledger.codec import decode
from eventfleet.ledger.events import AddItem, Order, Topup
from eventfleet.ledger.shards import ShardCounts, item_shard, user_shard
from eventfleet.producer import client as producer_client
from eventfleet.producer.client import Producer, grown
from eventfleet.store.keys import Keys
from eventfleet.store.namespace import create_shards, init_namespace
from tests.secure_redis import SECRETS, connect


@given(
    st.integers(1, 64),
    st.integers(1, 64),
    st.integers(1, 256),
    st.integers(1, 256),
    st.booleans(),
)
def test_grown_takes_only_multiples_and_keeps_the_rest(
    users: int, items: int, to_users: int, to_items: int, per_user: bool
) -> None:
    old = ShardCounts(users, items, 1000, orders_per_user=per_user)
    growth = to_users % users == 0 and to_items % items == 0
    if not growth:
        with pytest.raises(ValueError, match="cannot go from"):
            grown(old, to_users, to_items)
        return
    new = grown(old, to_users, to_items)
    if (to_users, to_items) == (users, items):
        assert new is None
    else:
        assert new == dataclasses.replace(old, users=to_users, items=to_items)


_EVENTS = st.one_of(
    st.builds(Topup, user_id=st.integers(1, 10**9), amount=st.integers(1, 10**6)),
    st.builds(
        AddItem,
        item_id=st.text("abcXYZ-_.:0123456789", min_size=1, max_size=12),
        count=st.integers(1, 100),
        price=st.integers(0, 1000),
    ),
    st.builds(
        Order,
        order_id=st.from_regex(r"o-[a-z0-9]{1,10}", fullmatch=True),
        user_id=st.integers(1, 10**6),
        item_id=st.text("abcXYZ-_.:0123456789", min_size=1, max_size=12),
        qty=st.integers(1, 10),
    ),
)


@given(st.lists(_EVENTS, max_size=30), st.integers(1, 4), st.integers(1, 4), st.integers(1, 8))
def test_rerouted_routes_prepared_texts_as_prepared_routes_their_events(
    events: list[Any], users: int, items: int, k: int
) -> None:
    """What a bulk publish routes again after the counts grew is where the events' models
    would have gone under the new counts."""
    _shards, bodies = prepared(events, ShardCounts(users, items))
    new = ShardCounts(users * k, items * k)
    assert rerouted(bodies, new) == prepared(events, new)[0]


def _inbox(r: redis.Redis, keys: Keys, shard: str) -> list[Topup]:
    out = []
    for text in r.lrange(keys.inbox(shard), 1, -1):  # past the inbox's head
        event = decode(text)
        assert isinstance(event, Topup)
        out.append(event)
    return out


@pytest.mark.parametrize("source", [None, "nightly"])
def test_the_asyncio_client_regrows_between_chunks_and_keeps_a_stamped_chunk_where_it_was(
    redis_server: Any, r: redis.Redis, namespace: str, source: str | None
) -> None:
    """Counts grown (2 -> 4 user shards, the new inboxes made first, as the command does)
    while a bulk publish runs: when the first chunk is confirmed the second is stamped and
    out, so it stays where the old counts sent it; the third and fourth go to the new shards,
    each new shard's seqs above every seq its parent got from the client; so do the single
    publishes after it, with receipts naming the new shard."""
    keys = Keys(namespace)
    init_namespace(r, keys, ShardCounts(2, 2))
    events = [Topup(user_id=i % 40 + 1, amount=i + 1) for i in range(400)]  # amount: position
    old, new = ShardCounts(2, 2), ShardCounts(4, 2)

    def grow(_count: int) -> None:
        if r.hget(keys.meta, "user_shards") == b"2":
            create_shards(r, keys, ["u2", "u3"])
            r.hset(keys.meta, "user_shards", 4)

    async def main() -> list[tuple[int, eventfleet.Receipt]]:
        async with aio.Client.from_url(redis_server.url, namespace=namespace) as client:
            client.counts_every_s = 0.0  # re-read at every send
            # 2,000 a second: chunks of 100, each one its own round trip
            await client.publish_many(events, source=source, progress=grow, rate=2000)
            single = [(u, await client.topup(user=u, amount=1000)) for u in range(1, 41)]
            (each,) = await client.publish_each([(Topup(user_id=41, amount=1000), None)])
            return [*single, (41, each)]

    receipts = asyncio.run(main())
    seen = {s: _inbox(r, keys, s) for s in ("u0", "u1", "u2", "u3")}
    bulk = {e.amount: s for s, evs in seen.items() for e in evs if e.amount <= 400}
    assert sorted(bulk) == list(range(1, 401))  # each once
    for position, shard in bulk.items():
        counts = old if position <= 200 else new  # chunks 1 and 2 stamped before the growth
        assert shard == user_shard(events[position - 1].user_id, counts), position
    checked: set[str] = set()
    for child in ("u2", "u3"):
        parent = f"u{int(child[1:]) % 2}"
        for src in {e.source for e in seen[child]}:
            direct = [e.seq for e in seen[child] if e.source == src]
            assert direct == sorted(set(direct))  # ascending: in order, none twice
            # above every seq the parent got from that source for the child's keys (before
            # the growth; the parent numbers its own keys on), as the child's dedup needs
            stale = [
                e.seq
                for e in seen[parent]
                if e.source == src and user_shard(e.user_id, new) == child
            ]
            assert direct[0] > max(stale, default=0)
            if stale:
                checked.add(src)
    assert checked == {e.source for e in seen["u0"] if e.amount <= 400}  # the bulk's
    for user, receipt in receipts:
        assert receipt.shard == user_shard(user, new)
        (got,) = [e for e in seen[receipt.shard] if e.amount == 1000 and e.seq == receipt.seq]
        assert got.user_id == user


def test_a_bulk_publish_and_single_publishes_sharing_a_source_across_a_growth(
    redis_server: Any, r: redis.Redis, namespace: str
) -> None:
    """Single publishes running beside a bulk publish of the same client (one source, one
    stamper, whichever learns the counts first): nothing is stamped for a parent after the
    stamper regrew, so each child's first direct seq is above every seq its parent got for
    the child's keys, and every event lands once."""
    keys = Keys(namespace)
    init_namespace(r, keys, ShardCounts(2, 2))
    new = ShardCounts(4, 2)
    bulk = [Topup(user_id=i % 40 + 1, amount=i + 1) for i in range(600)]

    def grow(_count: int) -> None:
        if r.hget(keys.meta, "user_shards") == b"2":
            create_shards(r, keys, ["u2", "u3"])
            r.hset(keys.meta, "user_shards", 4)

    async def main() -> int:
        async with aio.Client.from_url(redis_server.url, namespace=namespace) as client:
            client.counts_every_s = 0.0
            done = asyncio.Event()

            async def singles() -> int:
                n = 0
                while not done.is_set():
                    await client.topup(user=n % 40 + 1, amount=1000)
                    n += 1
                return n

            async def many() -> None:
                await client.publish_many(bulk, progress=grow, rate=3000)
                done.set()

            n, _ = await asyncio.gather(singles(), many())
            return n

    n = asyncio.run(main())
    seen = {s: _inbox(r, keys, s) for s in ("u0", "u1", "u2", "u3")}
    amounts = sorted(e.amount for evs in seen.values() for e in evs)
    assert amounts == list(range(1, 601)) + [1000] * n
    assert {e.source for evs in seen.values() for e in evs} == {seen["u0"][0].source}
    for child in ("u2", "u3"):
        parent = f"u{int(child[1:]) % 2}"
        direct = [e.seq for e in seen[child]]
        stale = [e.seq for e in seen[parent] if user_shard(e.user_id, new) == child]
        assert direct == sorted(set(direct)) and stale
        assert direct[0] > max(stale), child


def test_counts_that_shrink_or_are_not_multiples_are_ignored_then_a_growth_is_learnt(
    redis_server: Any, r: redis.Redis, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = Keys(namespace)
    init_namespace(r, keys, ShardCounts(2, 2))
    producer = Producer(r, keys, ShardCounts(2, 2), counts_every_s=0)

    async def publish_all(client: aio.Client) -> set[str]:
        return {(await client.topup(user=u, amount=1)).shard for u in range(1, 30)}

    async def main() -> None:
        async with aio.Client.from_url(redis_server.url, namespace=namespace) as client:
            client.counts_every_s = 0.0
            assert await publish_all(client) == {"u0", "u1"}
            for users, items in ((3, 2), (1, 2), (4, 3)):
                r.hset(keys.meta, mapping={"user_shards": users, "item_shards": items})
                with structlog.testing.capture_logs() as logs:
                    # an earlier test's configuration may filter warnings out or have the
                    # modules' loggers cached: fresh ones, made while capturing, log here
                    for module in (aio, producer_client):
                        monkeypatch.setattr(module, "log", structlog.get_logger())
                    assert await publish_all(client) == {"u0", "u1"}
                    producer.publish([Topup(user_id=u, amount=1) for u in range(1, 30)])
                assert producer.counts == ShardCounts(2, 2)
                ignored = [e for e in logs if e["event"] == "shard_counts_ignored"]
                assert len(ignored) >= 2 and "cannot go from" in ignored[0]["reason"], logs
            create_shards(r, keys, ["u2", "u3", "i2", "i3"])
            r.hset(keys.meta, mapping={"user_shards": 4, "item_shards": 4})
            assert await publish_all(client) == {"u0", "u1", "u2", "u3"}
            assert (await client.add_item("sku-9", 1, 1)).shard == item_shard(
                "sku-9", ShardCounts(4, 4)
            )

    config = structlog.get_config()
    structlog.reset_defaults()  # no level filter left by an earlier test's configuration
    try:
        asyncio.run(main())
    finally:
        structlog.configure(**config)


def test_reads_after_growth_read_the_shard_that_now_holds_the_key(
    redis_server: Any, r: redis.Redis, namespace: str
) -> None:
    """Both clients: a balance, an item and an order's status before the growth come from
    the parent's model, after it from the child's (the worker moves the fields: here they
    are written by hand, so which hash was read shows)."""
    keys = Keys(namespace)
    init_namespace(r, keys, ShardCounts(2, 2))
    old, new = ShardCounts(2, 2), ShardCounts(4, 4)
    user = next(u for u in range(100) if user_shard(u, old) != user_shard(u, new))
    item = next(f"sku-{n}" for n in range(100) if item_shard(f"sku-{n}", old) != item_shard(
        f"sku-{n}", new))  # fmt: skip
    for counts, balance in ((old, 5), (new, 42)):
        r.hset(keys.model(user_shard(user, counts)), f"b:{user}", balance)
        r.hset(keys.model(user_shard(user, counts)), f"o:{user}/o-1", "confirmed")
        r.hset(keys.model(item_shard(item, counts)), f"i:{item}", f"{balance} 7")
    sync = eventfleet.Client(r, namespace)
    sync._producer.counts_every_s = 0.0
    sync._producer._counts_due = 0.0

    async def reads(client: aio.Client) -> tuple[int, int | None, str | None]:
        found = await client.item(item)
        status = await client.order_status("o-1", user=user)
        return await client.balance(user), found.remain if found else None, status

    async def main() -> None:
        async with aio.Client.from_url(redis_server.url, namespace=namespace) as client:
            client.counts_every_s = 0.0
            assert await reads(client) == (5, 5, "confirmed")
            assert sync.balance(user) == 5 and sync.item(item) == eventfleet.Item(item, 5, 7)
            create_shards(r, keys, ["u2", "u3", "i2", "i3"])
            r.hset(keys.meta, mapping={"user_shards": 4, "item_shards": 4})
            r.hdel(keys.model(user_shard(user, old)), f"o:{user}/o-1")  # moved to the child
            assert await reads(client) == (42, 42, "confirmed")
            assert sync.balance(user) == 42 and sync.item(item) == eventfleet.Item(item, 42, 7)
            assert sync.order_status("o-1", user=user) == "confirmed"
            assert sync.topup(user=user, amount=1).shard == user_shard(user, new)
            assert sync.counts == new

    asyncio.run(main())


def test_the_shipped_producer_user_learns_the_counts_and_reads_with_them(port: int) -> None:
    """As ``eventfleet-producer`` of the shipped ACL file: the ``HMGET`` of the counts, the
    pushes to the new shards' inboxes and the reads of their models are all allowed."""
    root, keys = connect(port, "root", decode_responses=False), Keys("eventfleet")
    init_namespace(root, keys, ShardCounts(2, 2))
    root.hset(keys.model("u3"), "b:3", 9)  # user 3: u1 of 2, u3 of 4
    url = f"redis://127.0.0.1:{port}/0"
    secret = SECRETS / "eventfleet-producer.password"

    async def main() -> None:
        async with aio.Client.from_url(
            url, username="eventfleet-producer", password_file=secret
        ) as client:
            client.counts_every_s = 0.0
            assert (await client.topup(user=3, amount=1)).shard == "u1"
            create_shards(root, keys, ["u2", "u3"])
            root.hset(keys.meta, "user_shards", 4)
            assert (await client.topup(user=3, amount=1)).shard == "u3"
            assert await client.balance(3) == 9 and client.counts == ShardCounts(4, 2)

    asyncio.run(main())
    assert len(root.lrange(keys.inbox("u3"), 1, -1)) == 1
    root.close()
