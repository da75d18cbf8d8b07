"""The Python API under the shipped ACL: events published one at a time with an idempotency
key take effect once per key, whichever producer sends them and however often; a named
source's numbering survives the process; an order placed with a wait gets its outcome."""

from __future__ import annotations

from pathlib import Path

import pytest

from eventfleet.ledger.events import AddItem, Order, Topup
from eventfleet.ledger.shards import ShardCounts
from eventfleet.local.fleet import LocalFleet
from eventfleet.producer.client import Producer
from eventfleet.producer.outcomes import place_order
from eventfleet.store.keys import Keys
from tests.acl_stack import AclStack

KEYS = Keys("eventfleet")


def test_a_key_takes_effect_once_whoever_sends_it(
    port: int, tmp_path: Path, fleet_factory: list[LocalFleet]
) -> None:
    stack = AclStack(port, tmp_path, fleet_factory)
    stack.init("--user-shards", "2", "--item-shards", "2")
    r = stack.client("producer")
    counts = ShardCounts(2, 2)
    # three request handlers (three producers) retry the same top-up; one sends another
    for _ in range(3):
        p = Producer(r, KEYS, counts)
        p.publish_one(Topup(user_id=3, amount=500), key="req-3-a")
        p.publish_one(Topup(user_id=3, amount=500), key="req-3-a")
    Producer(r, KEYS, counts).publish_one(Topup(user_id=3, amount=7), key="req-3-b")
    Producer(r, KEYS, counts).publish_one(Topup(user_id=3, amount=1))  # no key: always applied
    for _ in range(2):
        Producer(r, KEYS, counts).publish_one(
            AddItem(item_id="pen", count=5, price=20), key="restock-pen-1"
        )
    stack.ok("producer", "produce", "topup", "--user", "3", "--amount", "500", "--key", "req-3-a")
    stack.workers(1)
    stack.idle()
    state = stack.state()
    assert state["users"]["3"]["balance"] == 508
    assert state["items"]["pen"]["remain"] == 5

    p = Producer(r, KEYS, counts)
    outcome = place_order(p, Order(order_id="o-pen", user_id=3, item_id="pen", qty=2), 120)
    assert outcome is not None and (outcome.status, outcome.amount) == ("confirmed", 40)
    again = place_order(p, Order(order_id="o-pen", user_id=3, item_id="pen", qty=2), 120)
    assert again is not None and (again.status, again.first) == ("duplicate", "confirmed")
    stack.idle()
    report = stack.verify()
    assert report["ok"], report
    assert report["totals"]["duplicates_dropped"] == 7  # 6 repeated top-ups, 1 add_item


def test_keys_and_names_are_checked_before_anything_is_sent(port: int, tmp_path: Path) -> None:
    stack = AclStack(port, tmp_path, [])
    stack.init("--user-shards", "1", "--item-shards", "1")
    p = Producer(stack.client("producer"), KEYS, ShardCounts(1, 1))
    with pytest.raises(ValueError, match="idempotency key"):
        p.publish_one(Topup(user_id=1, amount=1), key="no spaces")
    with pytest.raises(ValueError, match="not order"):
        p.publish_one(Order(order_id="o", user_id=1, item_id="x", qty=1), key="k")
    with pytest.raises(ValueError, match="source name"):
        Producer(stack.client("producer"), KEYS, ShardCounts(1, 1), name="a b")
    result = stack.run(
        "producer", "produce", "topup", "--user", "1", "--amount", "1", "--key", "x" * 65
    )
    assert result.returncode == 2 and "idempotency key" in result.stderr, result


def test_a_named_source_continues_across_processes(
    port: int, tmp_path: Path, fleet_factory: list[LocalFleet]
) -> None:
    """Two processes (two Producer objects) of one named source: the second re-sends the
    first's events with their seqs (changing nothing) and goes on with higher ones."""
    stack = AclStack(port, tmp_path, fleet_factory)
    stack.init("--user-shards", "1", "--item-shards", "1")
    r = stack.client("producer")
    events = [Topup(user_id=1, amount=n) for n in range(1, 11)]
    first = Producer(r, KEYS, ShardCounts(1, 1), name="billing")
    assert first.source == "p:billing"
    first.publish(events[:6], seqs=range(1, 7))
    second = Producer(r, KEYS, ShardCounts(1, 1), name="billing")
    second.publish(events, seqs=range(1, 11))
    with pytest.raises(ValueError, match="must grow"):
        second.publish(events[:1], seqs=[3])
    stack.workers(1)
    stack.idle()
    assert stack.state()["users"]["1"]["balance"] == sum(range(1, 11))
