"""A seeded synthetic workload that reaches every outcome: confirmed, out of stock, unknown
item and insufficient funds. The same seed gives the same events."""

from __future__ import annotations

import random
from collections.abc import Iterator

from eventfleet.ledger.events import AddItem, ExternalEvent, Order, Topup


def mixed(
    n: int, seed: int = 1, users: int = 200, items: int = 50, prefix: str | None = None
) -> Iterator[ExternalEvent]:
    rng = random.Random(seed)
    tag = prefix if prefix is not None else f"s{seed}"
    known: list[str] = []
    for i in range(n):
        roll = rng.random()
        if not known or roll < 0.10:
            item = f"sku-{rng.randrange(items)}"
            if item not in known:
                known.append(item)
            yield AddItem(item_id=item, count=rng.randint(1, 20), price=rng.randint(50, 2000))
        elif roll < 0.45:
            yield Topup(user_id=rng.randint(1, users), amount=rng.randint(100, 5000))
        else:
            item = rng.choice(known) if rng.random() > 0.05 else f"ghost-{rng.randrange(10)}"
            yield Order(
                order_id=f"o-{tag}-{i}",
                user_id=rng.randint(1, users),
                item_id=item,
                qty=rng.randint(1, 5),
            )


def topups(n: int, users: int = 100_000, seed: int = 1) -> Iterator[Topup]:
    rng = random.Random(seed)
    for _ in range(n):
        yield Topup(user_id=rng.randint(1, users), amount=rng.randint(1, 1000))
