"""Scenario k: a settled order workload, eventfleet (exactly-once) against the at-least-once
loop a team would write by hand (``eventfleet.bench.loop_mixed``), 1 and 2 processes each.

The workload: set-up events (top-ups and items) followed by orders, 5% of them for items that
do not exist, all in one backlog. eventfleet's figure runs from its first read until every
saga step has settled (both hops, compensations included); the loop's from its first read
until every entry is applied and acked. Same events, same Redis, same shard streams.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

from eventfleet.bench import loop_mixed
from eventfleet.bench.env import BenchEnv, append_to_logs
from eventfleet.bench.runs import COUNTS, MIXED_ITEMS, MIXED_USERS, backlog
from eventfleet.ledger.events import AddItem, ExternalEvent, Order, Topup


def settled_orders(setup: int, orders: int, seed: int = 7) -> Iterator[ExternalEvent]:
    """``setup`` top-ups and items (one item event in five), then ``orders`` orders."""
    rng = random.Random(seed)
    for i in range(setup):
        if i % 5 == 0:
            item = f"sku-{rng.randrange(MIXED_ITEMS)}"
            yield AddItem(item_id=item, count=rng.randint(50, 500), price=rng.randint(50, 2000))
        else:
            yield Topup(user_id=rng.randint(1, MIXED_USERS), amount=rng.randint(1000, 50_000))
    for i in range(orders):
        ghost = rng.random() < 0.05
        item = f"ghost-{rng.randrange(10)}" if ghost else f"sku-{rng.randrange(MIXED_ITEMS)}"
        yield Order(
            order_id=f"k-{seed}-{i}",
            user_id=rng.randint(1, MIXED_USERS),
            item_id=item,
            qty=rng.randint(1, 3),
        )


def _rate(events: int, seconds: float) -> float:
    return round(events / seconds, 1) if seconds > 0 else 0.0


def orders_vs_loop(env: BenchEnv, setup: int, orders: int) -> dict[str, Any]:
    events = list(settled_orders(setup, orders))
    out: dict[str, Any] = {"events": len(events), "setup": setup, "orders": orders}
    for n in (1, 2):
        res = backlog(env, f"bench-k{n}", n, events)
        out[f"eventfleet_{n}w"] = res["events_per_s"]
        out[f"eventfleet_{n}w_entries_per_s"] = res["entries_per_s"]
    for n in (1, 2):
        keys = env.namespace(f"bench-kl{n}", COUNTS)
        append_to_logs(env.client, keys, COUNTS, events)  # the loop reads the streams
        secs = loop_mixed.run(env.client, env.url, keys, COUNTS.all_shards(), n, timeout=300)
        env.drop(keys)
        out[f"loop_{n}w"] = _rate(len(events), secs)
    for n in (1, 2):
        loop = out[f"loop_{n}w"]
        out[f"ratio_{n}w"] = round(out[f"eventfleet_{n}w"] / loop, 2) if loop else 0.0
    return out
