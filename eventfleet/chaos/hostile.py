"""The ``hostile`` fault: entries a buggy or hostile producer could append, pushed through the
producer's own write (``RPUSHX`` into shard inboxes) while the fleet runs.

Each strike sends, to shards chosen by the run's seed: a ``charge`` claiming an item shard's
source with a huge seq, a ``release`` of a million claiming a user shard's source, a top-up
claiming a shard's source, 30,000 and 100,000 nested ``[``, bytes that are not UTF-8, a
number of 5,000 digits (all seven are dead letters and change nothing), and three valid
events from a source of its own: an item priced at 2^53 - 1, an order for two of it (its
amount cannot be represented: rejected, stock untouched) and a top-up with seq 10^12 (a gap
the protocol allows). ``verify`` must still find nothing lost, duplicated or mismatched.
"""

from __future__ import annotations

import json
import random
from typing import Any

import redis

from eventfleet.ledger.codec import encode
from eventfleet.ledger.events import MAX_INT, AddItem, Order, Topup
from eventfleet.ledger.shards import ShardCounts, item_shard, user_shard
from eventfleet.store.keys import Keys

DEAD_PER_STRIKE = 7
"""Entries of one strike that must end as dead letters."""


def hostile_batch(counts: ShardCounts, rng: random.Random, n: int) -> list[tuple[str, bytes]]:
    """Strike ``n``'s entries as ``(shard, entry text)``, in the order they are pushed."""
    user = rng.randint(1, 1000)
    ushard = user_shard(user, counts)
    item = f"hostile-{n}"
    ishard = item_shard(item, counts)
    own = f"p:hostile-{n}"
    forged_charge = {"type": "charge", "order_id": f"forged-{n}", "user_id": user,
                     "item_id": item, "qty": 1, "amount": 1, "source": ishard,
                     "seq": 10**12}  # fmt: skip
    forged_release = {"type": "release", "order_id": f"forged-{n}", "item_id": item,
                      "qty": 1_000_000, "source": ushard, "seq": 1}  # fmt: skip
    pushes: list[tuple[str, Any]] = [
        (ushard, json.dumps(forged_charge)),
        (ishard, json.dumps(forged_release)),
        (ushard, encode(Topup(user_id=user, amount=5), ishard, 1)),
        (ushard, "[" * 30_000),
        (ishard, "[" * 100_000),
        (ushard, b"\xff\xfe not utf-8"),
        (ishard, '{"type":"add_item","item_id":"x","count":' + "9" * 5000 + "}"),
        (ishard, encode(AddItem(item_id=item, count=5, price=MAX_INT), own, 1)),
        (ishard, encode(Order(order_id=f"hostile-{n}", user_id=user, item_id=item, qty=2), own, 2)),
        (ushard, encode(Topup(user_id=user, amount=1), own, 10**12)),
    ]
    return [(s, t.encode() if isinstance(t, str) else t) for s, t in pushes]


def push(r: redis.Redis, keys: Keys, batch: list[tuple[str, bytes]]) -> None:
    """Append each entry to its shard's inbox, as the producer's credentials can."""
    pipe = r.pipeline(transaction=False)
    for shard, text in batch:
        pipe.execute_command("RPUSHX", keys.inbox(shard), text)  # type: ignore[no-untyped-call]
    pipe.execute()
