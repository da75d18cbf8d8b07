"""`dlq redrive` under the shipped ACL: re-drives running at once, and a re-drive run again
after a crash between publishing and marking, re-publish each letter's effect once."""

from __future__ import annotations

import json
from pathlib import Path

from eventfleet.ledger.codec import encode
from eventfleet.ledger.events import Topup
from eventfleet.ledger.shards import ShardCounts, user_shard
from eventfleet.local.fleet import LocalFleet
from tests.acl_stack import AclStack
from tests.helpers import wait_for
from tests.secure_redis import connect

COUNTS = ShardCounts(2, 1)
LETTERS = 300


def _misroute(stack: AclStack) -> None:
    """300 top-ups of 5 put on the wrong user shard (as the admin can): each is dead-lettered
    with reason wrong_shard, and a re-drive sends it home."""
    admin = stack.client("admin")
    pipe = admin.pipeline(transaction=False)
    for n in range(1, LETTERS + 1):
        user = n % 40 + 1
        wrong = "u1" if user_shard(user, COUNTS) == "u0" else "u0"
        text = encode(Topup(user_id=user, amount=5), "p:misrouted", n)
        pipe.xadd(f"eventfleet:{{{wrong}}}:events", {"event": text})
    pipe.execute()


def _letters(stack: AclStack) -> int:
    return len(json.loads(stack.ok("admin", "dlq", "list", "--json")))


def _credited(stack: AclStack) -> int:
    return sum(u["balance"] for u in stack.state()["users"].values())


def test_concurrent_and_rerun_redrives_credit_each_letter_once(
    port: int, tmp_path: Path, fleet_factory: list[LocalFleet]
) -> None:
    stack = AclStack(port, tmp_path, fleet_factory)
    stack.init("--user-shards", "2", "--item-shards", "1")
    _misroute(stack)
    stack.workers(2)
    wait_for(lambda: _letters(stack) == LETTERS, 240, "300 dead letters")
    stack.idle()
    assert _credited(stack) == 0

    dry = json.loads(stack.ok("admin", "dlq", "redrive", "--dry-run", "--json"))
    assert dry["dry_run"] and dry["redriven"] == LETTERS and not dry["still_invalid"]
    assert {d["to"] for d in dry["letters"]} == {"u0", "u1"}
    assert _letters(stack) == LETTERS  # a dry run marks nothing

    runs = [stack.popen("admin", "dlq", "redrive", "--json") for _ in range(3)]
    assert [p.wait(timeout=240) for p in runs] == [0, 0, 0]
    stack.idle()
    assert _credited(stack) == 5 * LETTERS

    # a re-drive that crashed after publishing, before marking the letters re-driven
    root = connect(port, "root")
    root.delete("eventfleet:{u0}:dlq:redriven", "eventfleet:{u1}:dlq:redriven")
    assert _letters(stack) == LETTERS
    again = json.loads(stack.ok("admin", "dlq", "redrive", "--json"))
    assert again["redriven"] == LETTERS
    stack.idle()
    assert _credited(stack) == 5 * LETTERS
    assert _letters(stack) == 0
    report = stack.verify()
    assert report["ok"], report
