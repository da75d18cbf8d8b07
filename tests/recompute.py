"""Recompute the whole ledger from the logs, independently of the workers, and compare."""

from __future__ import annotations

from typing import Any

import redis

from eventfleet.ledger.events import AddItem, Order, Topup
from eventfleet.ledger.rules import StepResult
from eventfleet.ledger.shards import ShardCounts
from eventfleet.ledger.state import ShardState
from eventfleet.ops.reader import fold_stream, read_outcomes, state_all
from eventfleet.store.keys import Keys
from eventfleet.store.namespace import read_counts


def recompute(r: redis.Redis, keys: Keys, counts: ShardCounts) -> dict[str, Any]:
    """Fold every stream from its first entry; collect the outcomes the folds produce."""
    users: dict[str, Any] = {}
    items: dict[str, Any] = {}
    outcomes: dict[str, list[dict[str, Any]]] = {}
    applied_pairs = 0
    for shard in counts.all_shards():
        st = ShardState(shard)
        produced: list[dict[str, Any]] = []

        def on_entry(eid: str, res: StepResult, produced: list[dict[str, Any]] = produced) -> None:
            produced.extend(o.outcome.model_dump() | {"seq": o.seq} for o in res.outcomes)

        fold_stream(r, keys, shard, counts, st, on_entry=on_entry)
        applied_pairs += st.applied
        for uid, bal in st.balances.items():
            users[str(uid)] = {"balance": bal}
        for iid, it in st.items.items():
            items[iid] = {"price": it.price, "remain": it.remain}
        if shard.startswith("u"):
            outcomes[shard] = produced
    return {"users": users, "items": items, "outcomes": outcomes}


def check_against_logs(
    r: redis.Redis, ns: str, published: list[Topup | AddItem | Order] | None = None
) -> dict[str, Any]:
    """Assert `state all` equals a recomputation from the logs, outcome records match one to one,
    every order has exactly one outcome, and the invariants hold. Returns the state."""
    keys = Keys(ns)
    counts = read_counts(r, keys)
    expect = recompute(r, keys, counts)
    got = state_all(r, keys, counts)
    assert got["users"] == dict(sorted(expect["users"].items(), key=lambda kv: int(kv[0])))
    assert got["items"] == dict(sorted(expect["items"].items()))
    seen: dict[str, int] = {}
    for shard in (f"u{n}" for n in range(counts.users)):
        stored = [o.model_dump() | {"seq": seq} for seq, o in read_outcomes(r, keys, shard)]
        assert stored == expect["outcomes"][shard], f"outcomes of {shard} differ"
        for rec in stored:
            seen[rec["order_id"]] = seen.get(rec["order_id"], 0) + 1
    assert all(n == 1 for n in seen.values()), "an order has more than one outcome"
    assert all(u["balance"] >= 0 for u in got["users"].values())
    assert all(i["remain"] >= 0 for i in got["items"].values())
    if published is not None:
        orders = {e.order_id for e in published if isinstance(e, Order)}
        assert set(seen) == orders, "orders without an outcome, or outcomes without an order"
        confirmed = [o for o in got["orders"].values() if o["status"] == "confirmed"]
        topped = sum(e.amount for e in published if isinstance(e, Topup))
        assert topped == sum(u["balance"] for u in got["users"].values()) + sum(
            o["amount"] for o in confirmed
        ), "money is not conserved"
        added = sum(e.count for e in published if isinstance(e, AddItem))
        assert added == sum(i["remain"] for i in got["items"].values()) + sum(
            o["qty"] for o in confirmed
        ), "stock is not conserved"
    return got
