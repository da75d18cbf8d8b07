"""An order id takes effect at most once, under the shipped ACL: the same order again, or
another order reusing the id on the same or another item (another item shard), changes
nothing; the first outcome stands and reserved stock comes back. `produce order --wait`
answers with the outcome and an exit code per kind."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import redis

from eventfleet.ledger.shards import ShardCounts, item_shard, user_shard
from eventfleet.local.fleet import LocalFleet
from eventfleet.store.keys import Keys
from eventfleet.store.namespace import init_namespace, read_counts
from tests.acl_stack import AclStack

COUNTS = ShardCounts(2, 4)
A, B = "sku-a", "sku-b"  # on different item shards (checked below)


def _order(stack: AclStack, *args: str, timeout: str = "120") -> tuple[int, dict[str, Any]]:
    result = stack.run(
        "producer", "produce", "order", *args, "--wait", "--timeout", timeout, "--json"
    )
    assert result.stdout.strip(), result.stderr
    return result.returncode, json.loads(result.stdout)


def test_an_order_id_takes_effect_once(
    port: int, tmp_path: Path, fleet_factory: list[LocalFleet]
) -> None:
    assert item_shard(A, COUNTS) != item_shard(B, COUNTS)
    stack = AclStack(port, tmp_path, fleet_factory)
    stack.init("--user-shards", "2", "--item-shards", "4")
    for item in (A, B):
        stack.ok(
            "producer", "produce", "add-item", "--item", item, "--count", "10", "--price", "100"
        )
    stack.ok("producer", "produce", "topup", "--user", "7", "--amount", "1000")

    # no worker yet: the wait times out (exit 5), and the order stays published
    code, doc = _order(stack, "--user", "8", "--item", A, "--qty", "1", "--order-id", "o-late",
                       timeout="0.5")  # fmt: skip
    assert (code, doc["status"]) == (5, "timeout")
    stack.workers(2)

    code, doc = _order(stack, "--user", "7", "--item", A, "--qty", "2", "--order-id", "o-1")
    assert (code, doc["status"], doc["amount"]) == (0, "confirmed", 200)
    # the same order again, and another order reusing the id on the same and another item
    for item, qty in ((A, "2"), (A, "5"), (B, "1")):
        code, doc = _order(stack, "--user", "7", "--item", item, "--qty", qty, "--order-id", "o-1")
        assert (code, doc["status"], doc["first"]) == (4, "duplicate", "confirmed"), doc

    # a rejected order id stays rejected: a retry that would fit is a duplicate
    code, doc = _order(stack, "--user", "7", "--item", B, "--qty", "50", "--order-id", "o-2")
    assert (code, doc["status"], doc["reason"]) == (3, "rejected", "out_of_stock")
    code, doc = _order(stack, "--user", "7", "--item", A, "--qty", "1", "--order-id", "o-2")
    assert (code, doc["status"], doc["first"]) == (4, "duplicate", "rejected")

    stack.idle()
    state = stack.state()
    assert state["users"]["7"]["balance"] == 800  # charged once
    assert state["items"][A]["remain"] == 8  # o-1's 2; every duplicate's stock came back
    assert state["items"][B]["remain"] == 10
    assert state["orders"]["o-1"]["status"] == "confirmed"
    assert state["orders"]["o-1"]["duplicates"] == 3
    assert state["orders"]["o-2"]["status"] == "rejected"
    assert state["orders"]["o-late"]["reason"] == "insufficient_funds"
    report = stack.verify()
    assert report["ok"], report
    assert report["totals"]["duplicate_orders"] == 4
    assert report["totals"]["outcomes"]["duplicate"] == 4

    shown = stack.ok("admin", "state", "order", "o-1")
    assert "confirmed" in shown and "3 duplicate" in shown, shown


def test_two_users_may_use_one_order_id(
    port: int, tmp_path: Path, fleet_factory: list[LocalFleet]
) -> None:
    """An order is a user's order id: users on different user shards (7 on u0, 8 on u1) and on
    one (7 and 6 on u0), on the same item and on items on different item shards, each get their
    own order; `state`, `--wait` and `verify` agree (before: both charged, `state` showed one,
    `verify` exited 3; and user 6's order was a `duplicate` of user 7's)."""
    counts = ShardCounts(2, 4)
    assert user_shard(7, counts) == user_shard(6, counts) != user_shard(8, counts)
    stack = AclStack(port, tmp_path, fleet_factory)
    stack.init("--user-shards", "2", "--item-shards", "4")
    for item in (A, B):
        stack.ok(
            "producer", "produce", "add-item", "--item", item, "--count", "10", "--price", "100"
        )
    for user in ("6", "7", "8"):
        stack.ok("producer", "produce", "topup", "--user", user, "--amount", "1000")
    stack.workers(2)

    for user, item, qty in (("7", A, "1"), ("8", B, "2"), ("6", A, "3")):
        code, doc = _order(stack, "--user", user, "--item", item, "--qty", qty, "--order-id", "o-x")
        assert (code, doc["status"], doc["user_id"]) == (0, "confirmed", int(user)), doc
    # each user's own retry is still a duplicate of that user's order
    code, doc = _order(stack, "--user", "6", "--item", B, "--qty", "1", "--order-id", "o-x")
    assert (code, doc["status"], doc["first"], doc["user_id"]) == (4, "duplicate", "confirmed", 6)

    stack.idle()
    state = stack.state()
    assert {u: state["users"][u]["balance"] for u in ("6", "7", "8")} == {
        "6": 700, "7": 900, "8": 800,
    }  # fmt: skip
    assert state["items"][A]["remain"] == 6 and state["items"][B]["remain"] == 8
    first = state["orders"]["o-x"]
    shown = [first, *first["others"]]
    assert [(o["user_id"], o["status"], o["duplicates"]) for o in shown] == [
        (6, "confirmed", 1), (7, "confirmed", 0), (8, "confirmed", 0),
    ]  # fmt: skip
    report = stack.verify()
    assert report["ok"], report
    text = stack.ok("admin", "state", "order", "o-x")
    assert [line.split(", ")[1] for line in text.splitlines()] == ["user 6", "user 7", "user 8"]
    one = json.loads(stack.ok("admin", "state", "order", "o-x", "--user", "8", "--json"))
    assert [o["user_id"] for o in one["outcomes"]] == [8] and one["outcome"]["amount"] == 200


def test_a_namespace_made_before_keeps_its_order_rule(r: redis.Redis, namespace: str) -> None:
    """`init` records that orders are per user; a namespace made before (no `order_ids` in
    meta) folds as it always did, and re-running `init` on it does not change that."""
    keys = Keys(namespace)
    init_namespace(r, keys, ShardCounts(1, 1))
    assert r.hget(keys.meta, "order_ids") == b"per_user"
    assert read_counts(r, keys).orders_per_user
    r.hdel(keys.meta, "order_ids")  # as a namespace made before
    init_namespace(r, keys, ShardCounts(1, 1))
    assert not read_counts(r, keys).orders_per_user
