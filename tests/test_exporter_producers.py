"""The exporter's gauges per producer identity, against a real Redis with the shipped ACL and
read as the shipped `eventfleet-exporter` user: each identity's backlog (summed over shards),
its fullest shard against the bound, what the moves dropped, `legacy` for the shared inboxes,
and a label set bounded by the registered identities (``MAX_SERIES`` at most)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import redis

from eventfleet.exporter import producers as exported
from eventfleet.exporter.gauges import PassStats, families
from eventfleet.exporter.read import NamespaceReader
from eventfleet.ledger.shards import ShardCounts, user_shard
from eventfleet.ops.status import is_idle
from eventfleet.store.keys import Keys
from tests.secure_redis import cli_env, connect, ok, run_cli, wait_for
from tests.test_producer_acl import worker

BOUND = 10
COUNTS = ShardCounts(2, 2)
KEYS = Keys("eventfleet")


def series(reading: Any) -> dict[str, dict[str, float]]:
    """Metric name -> producer label -> value, of the producer families served."""
    out: dict[str, dict[str, float]] = {}
    for family in families("eventfleet", reading, PassStats()):
        for sample in family.samples:
            if "producer" in sample.labels:
                out.setdefault(sample.name, {})[sample.labels["producer"]] = sample.value
            elif sample.name == "eventfleet_producers":
                out.setdefault(sample.name, {})[""] = sample.value
    return out


def url_of(admin: dict[str, str], name: str) -> str:
    doc = json.loads(ok(run_cli(admin, "producers", "add", name, "--json")))
    return str(doc["redis_url"])


def test_backlog_fill_and_dropped_per_identity(port: int, tmp_path: Path) -> None:
    admin = cli_env(
        f"redis://127.0.0.1:{port}/0", "admin", extra={"EVENTFLEET_PRODUCER_BACKLOG": str(BOUND)}
    )
    ok(run_cli(admin, "init", "--user-shards", "2", "--item-shards", "2"))
    shop_url, flood_url = url_of(admin, "shop"), url_of(admin, "flood")
    url_of(admin, "idle")
    exporter = connect(port, "exporter", decode_responses=False)
    reader = NamespaceReader(exporter, KEYS)

    # no worker: shop has 4 top-ups waiting on one shard and 3 on the other
    shop = {k: v for k, v in admin.items() if k not in ("EVENTFLEET_REDIS_USERNAME",)}
    shop.pop("REDIS_PASSWORD_FILE", None)
    shop["REDIS_URL"] = shop_url
    u_a, u_b = 1, next(u for u in range(2, 50) if user_shard(u, COUNTS) != user_shard(1, COUNTS))
    rows = [{"type": "topup", "user_id": u_a, "amount": 1}] * 4
    rows += [{"type": "topup", "user_id": u_b, "amount": 1}] * 3
    path = tmp_path / "shop.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in rows))
    ok(run_cli(shop, "produce", "file", str(path), "--source", "s1"))
    # a producer writing around its client: 10 events and 5 junk elements on one shard, past
    # its bound of 10 (the move cuts the 5 past it and counts them as dropped)
    flood = redis.Redis.from_url(flood_url)
    inbox = KEYS.inbox(user_shard(u_a, COUNTS), "flood")
    event = json.dumps({"type": "topup", "user_id": u_a, "amount": 1, "source": "f", "seq": 0})
    for _ in range(10):
        flood.rpushx(inbox, event)
    for _ in range(5):
        flood.rpushx(inbox, "x" * 100)
    # and the shared inbox, as a producer made before identities (the root stands in for it)
    root = connect(port, "root")
    root.rpushx(KEYS.inbox(user_shard(u_b, COUNTS)), event)

    reading = reader.read()
    assert reading.producers_registered == 3
    got = series(reading)
    assert got["eventfleet_producers"] == {"": 3}
    assert got["eventfleet_producer_backlog"] == {"legacy": 1, "shop": 7, "flood": 15, "idle": 0}
    assert got["eventfleet_producer_backlog_fill_ratio"] == {"shop": 0.4, "flood": 1.5, "idle": 0}
    assert got["eventfleet_producer_dropped"] == {"shop": 0, "flood": 0, "idle": 0}
    # the fullest first: a dashboard's top-k and the cap keep the ones that matter
    assert [p.name for p in reading.producers] == ["legacy", "flood", "shop", "idle"]

    with worker(port, tmp_path):
        wait_for("the fleet to apply everything", lambda: is_idle(root, KEYS, COUNTS), 60)
        reading = reader.read()
    got = series(reading)
    assert got["eventfleet_producer_backlog"] == {"legacy": 0, "shop": 0, "flood": 0, "idle": 0}
    assert got["eventfleet_producer_dropped"] == {"shop": 0, "flood": 5, "idle": 0}
    assert [p.name for p in reading.producers][:2] == ["legacy", "flood"]


def test_the_label_set_is_the_registered_identities_capped(port: int) -> None:
    """Names that are not registered (an inbox or a dropped count written by hand) get no
    series; past ``MAX_SERIES`` identities the fullest are exported, ``eventfleet_producers``
    still counts them all."""
    admin = cli_env(f"redis://127.0.0.1:{port}/0", "admin")
    ok(run_cli(admin, "init", "--user-shards", "2", "--item-shards", "2"))
    root = connect(port, "root")
    n = exported.MAX_SERIES + 5
    for i in range(n):
        root.hset(KEYS.producers, f"p{i:03d}", f"eventfleet-producer-p{i:03d}")
        for s in COUNTS.all_shards():
            root.rpush(KEYS.inbox(s, f"p{i:03d}"), "head")
    root.hset(KEYS.producers, "Not A Name", "x")
    root.rpush(KEYS.inbox("u0", "p054"), "{}", "{}")
    root.hset(KEYS.dropped("u0"), mapping={"stranger": 7, "p053": 2})
    reading = NamespaceReader(connect(port, "exporter", decode_responses=False), KEYS).read()
    assert reading.producers_registered == n
    names = [p.name for p in reading.producers]
    assert len(names) == exported.MAX_SERIES + 1
    assert names[:3] == ["legacy", "p054", "p053"], "the fullest, then the most dropped"
    assert "stranger" not in names and "Not A Name" not in names
