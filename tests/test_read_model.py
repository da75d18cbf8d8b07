"""The read model (worker/model.py) against the fold of the log: written with the batches,
brought up to date by a takeover after a SIGKILL, rebuilt whole when it was lost, and held to
the fold by `verify`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import redis

import eventfleet
from eventfleet.chaos.paced import PacedProducer
from eventfleet.ledger.events import AddItem, Topup
from eventfleet.ledger.shards import ShardCounts
from eventfleet.local.fleet import LocalFleet
from eventfleet.local.redisserver import LocalRedis
from eventfleet.ops.status import is_idle
from eventfleet.ops.verify import verify
from eventfleet.producer.client import Producer
from eventfleet.producer.workload import mixed
from eventfleet.store.keys import Keys
from eventfleet.worker.model import UPTO, fields
from tests.fleet_utils import make_fleet, setup_namespace
from tests.helpers import wait_for


def settle(r: redis.Redis, ns: str, counts: ShardCounts) -> None:
    wait_for(lambda: is_idle(r, Keys(ns), counts), 120, "the fleet to become idle")


def model_is_the_fold(r: redis.Redis, ns: str, counts: ShardCounts) -> None:
    report = verify(r, Keys(ns), counts)
    assert report.ok, [vars(f) for f in report.findings.shown][:10]
    for shard, fold in report.folds.items():
        raw: Any = r.hgetall(Keys(ns).model(shard))
        stored = {k.decode(): v.decode() for k, v in raw.items() if k != UPTO.encode()}
        assert stored == fields(fold.state), shard


def test_the_model_survives_kills_and_a_lost_model_is_rebuilt(
    redis_server: LocalRedis, r: redis.Redis, namespace: str, tmp_path: Path,
    fleet_factory: list[LocalFleet],
) -> None:  # fmt: skip
    counts = setup_namespace(r, namespace)
    fleet = make_fleet(redis_server.url, namespace, tmp_path, fleet_factory)
    ws = [fleet.start(), fleet.start()]
    events = list(mixed(8000, seed=5))
    load = PacedProducer(r, Keys(namespace), counts, events, rate=4000, chunk=200)
    load.start()
    wait_for(lambda: load.published >= 2000, 60, "events in flight")
    fleet.kill(ws[0])  # mid-stream: its shards are taken over, replayed entries in the model
    fleet.start()
    load.join(120)
    assert load.error is None
    settle(r, namespace, counts)
    model_is_the_fold(r, namespace, counts)

    # a model lost (or a namespace from before the model): the next takeover writes it whole
    for shard in counts.all_shards():
        r.delete(Keys(namespace).model(shard))
    for w in fleet.live():
        fleet.kill(w)
    fleet.start()
    wait_for(
        lambda: all(r.exists(Keys(namespace).model(s)) for s in counts.all_shards()),
        120,
        "every shard's model written again",
    )
    settle(r, namespace, counts)
    model_is_the_fold(r, namespace, counts)

    r.hset(Keys(namespace).model("u0"), "b:999999", "5")  # a value the ledger never held
    report = verify(r, Keys(namespace), counts)
    assert not report.ok and report.count("mismatch") == 1


def test_reads_are_read_your_writes_and_o1(
    redis_server: LocalRedis, r: redis.Redis, namespace: str, tmp_path: Path,
    fleet_factory: list[LocalFleet],
) -> None:  # fmt: skip
    counts = setup_namespace(r, namespace)
    make_fleet(redis_server.url, namespace, tmp_path, fleet_factory).start()
    Producer(r, Keys(namespace), counts).publish(
        [AddItem(item_id="sku", count=3, price=7)]
        + [Topup(user_id=u, amount=u) for u in range(1, 2001)]
    )
    with eventfleet.Client.from_url(redis_server.url, namespace=namespace) as client:
        for amount in (5, 6, 7):
            receipt = client.topup(user=1, amount=amount)
            # never older than the receipt: the top-up just sent is in what is read
            assert client.balance(1, after=receipt, timeout=30) >= 1 + 5
        assert client.balance(1, after=receipt) == 1 + 5 + 6 + 7
        result = client.order(user=1, item="sku", qty=2, wait=30)
        assert result.ok
        assert client.balance(1, after=result) == 1 + 5 + 6 + 7 - 14
        assert client.item("sku", after=result) == eventfleet.Item("sku", 1, 7)
        assert client.order_status(result.order_id, user=1) == "confirmed"
        assert client.order_status("o-never", user=1) is None
        assert client.item("never") is None
        assert client.balance(424242) == 0
        settle(r, namespace, counts)
        assert client.balance(2000) == 2000
    model_is_the_fold(r, namespace, counts)
