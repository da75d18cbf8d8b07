"""The chaos run's read check (eventfleet/chaos/readers.py) can fail: a read older than its
receipt, or from the future, is caught against a real log."""

from __future__ import annotations

import redis

from eventfleet.chaos.readers import SKEW_MS, Read, check_reads
from eventfleet.client import Receipt
from eventfleet.ledger.codec import encode
from eventfleet.ledger.events import Topup
from eventfleet.ledger.shards import user_shard
from eventfleet.store import ids
from eventfleet.store.keys import EVENT_FIELD, Keys
from tests.fleet_utils import setup_namespace


def test_reads_are_held_to_the_log(r: redis.Redis, namespace: str) -> None:
    counts = setup_namespace(r, namespace)
    keys = Keys(namespace)
    shard = user_shard(5, counts)
    eids = []
    for seq, amount in enumerate((10, 20, 40), start=1):  # balances 10, 30, 70
        text = encode(Topup(user_id=5, amount=amount), "p:reader", seq)
        eids.append(ids.text(r.xadd(keys.events(shard), {EVENT_FIELD: text})))
    late = ids.millis(eids[2]) + SKEW_MS + 1
    early = ids.millis(eids[2]) - SKEW_MS - 10_000

    def read(seq: int, value: int, done_ms: int = late) -> Read:
        return Read(5, Receipt(shard, "p:reader", seq), value, done_ms)

    good = [read(1, 10), read(1, 70), read(2, 30), read(3, 70)]
    assert check_reads(r, keys, counts, good).wrong == []
    bad = [read(2, 10), read(3, 30), read(1, 70, done_ms=early), read(9, 70)]
    found = check_reads(r, keys, counts, bad).wrong
    assert len(found) == 4, found  # older than the receipt (2), from the future, unknown receipt
