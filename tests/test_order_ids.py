"""An order id takes effect at most once, under the shipped ACL: the same order again, or
another order reusing the id on the same or another item (another item shard), changes
nothing; the first outcome stands and reserved stock comes back. `produce order --wait`
answers with the outcome and an exit code per kind."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from eventfleet.local.fleet import LocalFleet
from ledger.shards import ShardCounts, item_shard
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
