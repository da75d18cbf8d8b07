"""The producer sends each chunk on a thread while it stamps the next; a connection killed
under it must lose nothing and leave every shard's (source, seq) run complete."""

from __future__ import annotations

import json
from collections.abc import Iterator

import redis

from eventfleet.ledger.bundle import split
from eventfleet.ledger.events import Topup
from eventfleet.local.redisserver import LocalRedis
from eventfleet.producer.client import Producer
from eventfleet.store.keys import Keys
from tests.fleet_utils import setup_namespace


def test_a_killed_connection_mid_publish_loses_nothing(own_redis: LocalRedis) -> None:
    r = redis.Redis.from_url(own_redis.url)
    counts = setup_namespace(r, "p", 4, 1)
    keys = Keys("p")
    admin = redis.Redis.from_url(own_redis.url)
    n = 30_000
    kills = []

    def events() -> Iterator[Topup]:
        for i in range(n):
            if i in (7_000, 19_000):  # chunks are in flight here: kill every client connection
                kills.append(admin.client_kill_filter(_type="normal", skipme=True))
            yield Topup(user_id=1 + i % 500, amount=1)

    p = Producer(r, keys, counts)
    assert p.publish(events(), chunk=100) == n
    assert kills and all(k >= 1 for k in kills), kills
    total = 0
    for shard in (f"u{k}" for k in range(4)):
        seqs = [json.loads(t)["seq"] for e in r.lrange(keys.inbox(shard), 1, -1) for t in split(e)]
        distinct = sorted(set(seqs))
        assert distinct == list(range(1, len(distinct) + 1)), f"a gap in {shard}"
        firsts: list[int] = []  # each seq where it first landed: never before a lower one
        for s in seqs:
            if not firsts or s > firsts[-1]:
                firsts.append(s)
        assert firsts == distinct, f"{shard}: an event landed before one with a lower seq"
        total += len(distinct)
    assert total == n
