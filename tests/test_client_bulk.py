"""Bulk publishes (``publish_many`` of the sync and the asyncio client, the path of ``produce
file``) that Redis refuses midway (out of memory, for some of a chunk's pushes and not others)
lose nothing: a chunk is sent only once the one before it is confirmed, so no event of a later
chunk lands while an earlier one was refused, whose seqs the shards would then drop as repeats
when it is sent again."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable

import pytest
import redis

import eventfleet
from eventfleet import aio
from eventfleet.local.redisserver import LocalRedis
from eventfleet.store.keys import Keys
from tests.fleet_utils import setup_namespace

EVENTS = 6_000


def _ooms(r: redis.Redis) -> int:
    return int(r.info("errorstats").get("errorstat_OOM", {}).get("count", 0))


@pytest.mark.parametrize("kind", ["sync", "asyncio"])
def test_a_bulk_publish_refused_midway_lands_every_event_once_in_order(
    own_redis: LocalRedis, namespace: str, kind: str
) -> None:
    r = redis.Redis.from_url(own_redis.url)
    counts = setup_namespace(r, namespace)
    keys = Keys(namespace)
    rows = [{"type": "topup", "user_id": 1 + i % 97, "amount": 1} for i in range(EVENTS)]

    def refuse_until_refused(done: Callable[[], bool]) -> None:
        """Every push refused until two were, then memory again."""
        deadline = time.monotonic() + 30
        while _ooms(r) < 2:
            assert time.monotonic() < deadline, "no push was refused"
            assert not done(), "the publish ended before any push was refused"
            time.sleep(0.005)
        r.config_set("maxmemory", 0)

    if kind == "sync":
        client = eventfleet.Client.from_url(own_redis.url, namespace=namespace)
        result: list[int] = []
        r.config_set("maxmemory", 1)
        t = threading.Thread(
            target=lambda: result.append(client.publish_many(rows, source="bulk").count)
        )
        t.start()
        refuse_until_refused(lambda: not t.is_alive())
        t.join(60)
        client.close()
        assert result == [EVENTS]
    else:

        async def main() -> None:
            async with aio.Client.from_url(own_redis.url, namespace=namespace) as client:
                await client.publish_many([])  # connected, counts read
                r.config_set("maxmemory", 1)
                sending = asyncio.create_task(client.publish_many(rows, source="bulk"))
                await asyncio.to_thread(refuse_until_refused, sending.done)
                published = await asyncio.wait_for(sending, 60)
                assert published.count == EVENTS

        asyncio.run(main())
    seen: dict[str, list[int]] = {}
    for shard in counts.all_shards():
        for text in r.lrange(keys.inbox(shard), 0, -1)[1:]:  # the first is the inbox's head
            entry = json.loads(text)
            seen.setdefault(shard, []).append(int(entry["seq"]))
    # A write refused midway lands again in part when it is retried (the shards drop those
    # repeats): what counts is what a shard applies, each seq above the highest before it.
    applied: list[int] = []
    for per in seen.values():
        highest = 0
        for seq in per:
            if seq > highest:
                applied.append(seq)
                highest = seq
    assert sorted(applied) == list(range(1, EVENTS + 1))  # every event applied, once
    r.close()
