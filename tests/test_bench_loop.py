"""The at-least-once reference loop of bench scenario k really does the work it is timed on:
every order gets one outcome and money and stock are conserved (no faults, so no redelivery)."""

from __future__ import annotations

import redis

from eventfleet.bench import loop_mixed
from eventfleet.bench.env import append_to_logs
from eventfleet.bench.orders import settled_orders
from eventfleet.ledger.events import AddItem, Order, Topup
from eventfleet.ledger.shards import ShardCounts
from eventfleet.local.redisserver import LocalRedis
from eventfleet.store.keys import Keys
from eventfleet.store.namespace import init_namespace


def test_reference_loop_applies_every_event_once_without_faults(
    r: redis.Redis, redis_server: LocalRedis, namespace: str
) -> None:
    counts, keys = ShardCounts(4, 4), Keys(namespace)
    init_namespace(r, keys, counts)
    events = list(settled_orders(300, 1500, seed=3))
    append_to_logs(r, keys, counts, events)
    loop_mixed.run(r, redis_server.url, keys, counts.all_shards(), 2, timeout=120)

    stock, price, balance, outcomes = loop_mixed.state_keys(namespace)
    confirmed = [f for _, f in r.xrange(outcomes) if f[b"status"] == b"confirmed"]
    orders = [e for e in events if isinstance(e, Order)]
    assert r.xlen(outcomes) == len(orders)
    assert confirmed, "the workload confirms some orders"
    spent = sum(int(f[b"amount"]) for f in confirmed)
    topped = sum(e.amount for e in events if isinstance(e, Topup))
    assert sum(int(v) for v in r.hvals(balance)) + spent == topped
    added = sum(e.count for e in events if isinstance(e, AddItem))
    by_id = {o.order_id: o for o in orders}
    taken = sum(by_id[f[b"order"].decode()].qty for f in confirmed)
    assert sum(int(v) for v in r.hvals(stock)) + taken == added
    assert all(int(v) >= 0 for v in r.hvals(balance))
    assert r.hlen(price) > 0
