"""An order's wait across a growth of the shard counts (docs/DESIGN-DECISIONS.md section 35):
an order routed with the old counts may be decided by a child of its user's shard (its parent
forwards the order's charge), so once the client learns grown counts, or a reshard records its
target before publishing them, the wait reads the outcome streams of every shard that may
hold the user. Both clients and ``produce order
--wait``'s ``place_order``, against the session's Redis; no worker: the outcome record is
written by hand into the child's stream, so which stream the wait read shows."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import eventfleet
from eventfleet import aio
from eventfleet.client.results import Receipt
from eventfleet.ledger.codec import outcome_text
from eventfleet.ledger.events import Order
from eventfleet.ledger.shards import ShardCounts, shard_index, user_shard, user_shards_since
from eventfleet.producer.client import Producer
from eventfleet.producer.outcomes import place_order
from eventfleet.store.keys import Keys
from eventfleet.store.namespace import create_shards, init_namespace

OLD, NEW = ShardCounts(2, 2), ShardCounts(8, 2)


@given(
    st.integers(0, 10**9),
    st.integers(1, 16),
    st.lists(st.sampled_from([2, 3, 5]), max_size=4),
)
def test_user_shards_since_names_the_users_shard_under_every_count_between(
    user: int, then: int, factors: list[int]
) -> None:
    now = then
    for f in factors:
        now *= f
    got = user_shards_since(user, then, now)
    assert got[0] == f"u{shard_index(user, then)}"
    assert got[-1] == f"u{shard_index(user, now)}"
    assert len(got) == len(set(got))
    for c in range(then, now + 1, then):
        if now % c == 0:
            assert f"u{shard_index(user, c)}" in got


def _user() -> int:
    """A user whose shard under NEW is neither its shard under OLD nor under 4 shards."""
    return next(
        u for u in range(1000) if len({user_shard(u, ShardCounts(n, 2)) for n in (2, 4, 8)}) == 3
    )


def _grow_then_decide(
    r: Any, keys: Keys, user: int, receipts: list[Receipt | str], published: bool = True
) -> None:
    """Once the order is published: the counts grow 2 -> 8 in meta (``published``), or a
    reshard to 8 is only recorded (its command killed once the parents split: the counts are
    not published yet), and the child that now holds the user appends the order's outcome
    (as a worker would after a forward)."""
    while not receipts:
        threading.Event().wait(0.01)
    ref = receipts[0] if isinstance(receipts[0], str) else receipts[0].ref
    create_shards(r, keys, [f"u{n}" for n in range(2, 8)])
    if published:
        r.hset(keys.meta, "user_shards", NEW.users)
    else:
        r.hset(keys.meta, mapping={"reshard_target": "8,2", "reshard_state": "marked"})
    text = outcome_text("o-w", user, "sku-1", 1, 10, "confirmed", None, None, ref)
    r.xadd(keys.outcomes(user_shard(user, NEW)), {"outcome": text})


@pytest.mark.parametrize("published", [True, False])
def test_the_sync_clients_wait_finds_an_outcome_decided_by_a_child(
    r: Any, namespace: str, published: bool
) -> None:
    keys = Keys(namespace)
    init_namespace(r, keys, OLD)
    user = _user()
    client = eventfleet.Client(r, namespace)
    client._producer.counts_every_s = 0.05
    receipts: list[Receipt | str] = []
    helper = threading.Thread(target=_grow_then_decide, args=(r, keys, user, receipts, published))
    helper.start()
    result = client.order(
        user=user, item="sku-1", qty=1, order_id="o-w", wait=10, on_published=receipts.append
    )
    helper.join(timeout=10)
    assert isinstance(result, eventfleet.OrderResult) and result.status == "confirmed"
    assert client.counts == (NEW if published else OLD)


@pytest.mark.parametrize("published", [True, False])
def test_the_asyncio_clients_wait_finds_an_outcome_decided_by_a_child(
    redis_server: Any, r: Any, namespace: str, published: bool
) -> None:
    keys = Keys(namespace)
    init_namespace(r, keys, OLD)
    user = _user()
    receipts: list[Receipt | str] = []

    async def main() -> Any:
        async with aio.Client.from_url(redis_server.url, namespace=namespace) as client:
            client.counts_every_s = 0.05
            helper = asyncio.to_thread(_grow_then_decide, r, keys, user, receipts, published)
            order = client.order(
                user=user, item="sku-1", qty=1, order_id="o-w", wait=10,
                on_published=receipts.append,
            )  # fmt: skip
            result, _ = await asyncio.gather(order, helper)
            return result, client.counts

    result, counts = asyncio.run(main())
    assert isinstance(result, eventfleet.OrderResult) and result.status == "confirmed"
    assert counts == (NEW if published else OLD)


@pytest.mark.parametrize("published", [True, False])
def test_place_order_waits_on_the_children_too(r: Any, namespace: str, published: bool) -> None:
    """``produce order --wait``'s path: the producer re-reads the counts while it waits."""
    keys = Keys(namespace)
    init_namespace(r, keys, OLD)
    user = _user()
    producer = Producer(r, keys, OLD, counts_every_s=0.05)
    refs: list[Receipt | str] = []
    seq0 = dict(producer.seq)
    helper = threading.Thread(target=_grow_then_decide, args=(r, keys, user, refs, published))
    helper.start()

    def publish_then_note() -> None:  # the ref is known once the order is stamped
        while not producer.seq or producer.seq == seq0:
            threading.Event().wait(0.005)
        shard, seq = next(iter(producer.seq.items()))
        refs.append(f"{producer.source}/{seq}")
        del shard

    noter = threading.Thread(target=publish_then_note)
    noter.start()
    order = Order(order_id="o-w", user_id=user, item_id="sku-1", qty=1)
    outcome = place_order(producer, order, 10)
    noter.join(timeout=10)
    helper.join(timeout=10)
    assert outcome is not None and outcome.status == "confirmed"
