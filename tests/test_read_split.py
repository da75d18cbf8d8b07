"""Reads of the read model across a split (docs/DESIGN-DECISIONS.md, sections 31 and 35;
eventfleet/client/modelread.py), against the session's Redis and a worker running in this
process: between a parent's marker and its child's first takeover (held open here: the counts
are not published, so no worker takes the child) a key that moved is read from the child's
model, which holds its seed; a read with a receipt from a stale router (naming the parent)
never returns a value older than the receipt (the parent's own mark rises when it forwards,
before the child applies) nor one of a later write; once the counts are published and the
child taken, both a client that learnt them and one that did not read the same."""

from __future__ import annotations

import asyncio

import pytest
import redis
from hypothesis import given, settings
from hypothesis import strategies as st

import eventfleet
import eventfleet.aio
from eventfleet.client.errors import WaitTimeout
from eventfleet.client.modelread import descends
from eventfleet.ledger.shards import ShardCounts, user_shard
from eventfleet.ledger.split import marker_text
from eventfleet.local.redisserver import LocalRedis
from eventfleet.store.keys import EVENT_FIELD, Keys
from eventfleet.store.namespace import create_shards, init_namespace
from tests.helpers import wait_for
from tests.test_split_worker import running_worker

GROWN = ShardCounts(4, 2)


def stale_client(r: redis.Redis, namespace: str) -> eventfleet.Client:
    client = eventfleet.Client(r, namespace)
    client._producer.counts_every_s = 10**9  # a router that never re-reads the counts
    return client


def test_reads_across_a_split_are_never_older_than_their_receipt(
    r: redis.Redis, namespace: str, redis_server: LocalRedis
) -> None:
    keys = Keys(namespace)
    init_namespace(r, keys, ShardCounts(2, 2))
    moving = [u for u in range(1, 60) if user_shard(u, GROWN) == "u2"][:3]
    staying = [u for u in range(1, 60) if user_shard(u, GROWN) == "u0"][:1]
    stale = stale_client(r, namespace)
    with running_worker(r, namespace, splits=None):
        first = {u: stale.topup(user=u, amount=100) for u in [*moving, *staying]}
        assert {u: stale.balance(u, after=first[u]) for u in first} == dict.fromkeys(first, 100)

        # the admin's steps short of publishing: new shards, init counts, markers
        create_shards(r, keys, ["u2", "u3"])
        r.hset(keys.meta, mapping={"init_user_shards": 2, "init_item_shards": 2})
        for shard in ("u0", "u1"):
            r.xadd(keys.events(shard), {EVENT_FIELD: marker_text(4, 2)})
        wait_for(lambda: r.hget(keys.model("u0"), "_routing"), 20, "u0 split")
        assert r.exists(keys.snapshot("u2")) and not r.exists(keys.lease("u2"))
        assert r.hget(keys.model("u0"), f"b:{moving[0]}") is None  # the parent let go

        # no gap: the moved keys are read from the child's seed, with or without a receipt
        for u in moving:
            assert stale.balance(u) == 100
            assert stale.balance(u, after=first[u]) == 100
        assert stale.balance(staying[0], after=first[staying[0]]) == 100

        # a stale router's new top-up: u0 forwards it (its own mark rises), u2 is not owned
        # yet, so a read with its receipt waits rather than return the value before it
        late = stale.topup(user=moving[0], amount=5)
        assert late.shard == "u0"
        wait_for(lambda: r.xlen(keys.events("u2")), 20, "the forward in u2's log")
        assert int(r.hget(keys.model("u0"), f"w:{late.source}") or 0) >= late.seq
        with pytest.raises(WaitTimeout):
            stale.balance(moving[0], after=late, timeout=0.3)
        assert stale.balance(moving[0]) == 100  # without a receipt: the value as it is

        async def aio_read() -> tuple[int, int]:
            url = redis_server.url
            async with eventfleet.aio.Client.from_url(url, namespace=namespace) as client:
                client.counts_every_s = 10**9
                seeded = await client.balance(moving[1], after=first[moving[1]])
                try:
                    await client.balance(moving[0], after=late, timeout=0.3)
                except WaitTimeout:
                    return seeded, -1
                return seeded, 0

        assert asyncio.run(aio_read()) == (100, -1)

        # the counts published: the child is taken and applies what was forwarded
        r.hset(keys.meta, "user_shards", 4)
        fresh = eventfleet.Client(r, namespace)
        fresh._producer.counts_every_s = 0.0
        assert stale.balance(moving[0], after=late, timeout=20) == 105
        assert fresh.balance(moving[0], after=late, timeout=20) == 105
        assert fresh.counts.users == 4
        # a receipt of the child (a router that learnt the counts), read by a stale client
        direct = fresh.topup(user=moving[0], amount=1)
        assert direct.shard == "u2"
        assert stale.balance(moving[0], after=direct, timeout=20) == 106
        assert fresh.balance(moving[0], after=direct) == 106
        assert fresh.balance(staying[0], after=first[staying[0]]) == 100


@settings(max_examples=200)
@given(
    st.integers(0, 10**6),
    st.integers(1, 8),
    st.lists(st.integers(2, 4), min_size=1, max_size=4),
)
def test_a_keys_shard_after_growths_descends_from_its_shard_before(
    user: int, first: int, factors: list[int]
) -> None:
    """What ``ModelRead`` relies on to wait for ``f:<receipt shard>:<source>``: the shard a
    key has after any growths by multiples is born of the one it had before, or is it."""
    counts = [first]
    for k in factors:
        counts.append(counts[-1] * k)
    for i, then in enumerate(counts):
        for now in counts[i:]:
            old = user_shard(user, ShardCounts(then, 1))
            new = user_shard(user, ShardCounts(now, 1))
            assert new == old or descends(new, old, now)
    assert not descends("i3", "u1", 8) and not descends("u1", "u1", 8)
