"""A dead letter that is a bundle (one log entry of several events, as the inbox move makes
them) re-drives every event it holds, once: a poison mark put on an applied bundle by a leaked
worker credential dead-letters it at the next takeover, and `dlq redrive` gives all of its
credit back, even when run twice (before: the bundle was "still invalid" and the credit
stayed gone)."""

from __future__ import annotations

import json
from pathlib import Path

from eventfleet.ledger.bundle import is_bundle
from eventfleet.ledger.shards import ShardCounts, user_shard
from eventfleet.local.fleet import LocalFleet
from eventfleet.store.keys import EVENT_FIELD
from tests.acl_stack import AclStack
from tests.helpers import wait_for

U0 = 4  # a user on u0 of 2 user shards


def _key(shard: str, what: str) -> str:
    return f"eventfleet:{{{shard}}}:{what}"


def test_a_dead_lettered_bundle_is_redriven_whole_and_once(
    port: int, tmp_path: Path, fleet_factory: list[LocalFleet]
) -> None:
    assert user_shard(U0, ShardCounts(2, 1)) == "u0"
    stack = AclStack(port, tmp_path, fleet_factory)
    stack.init("--user-shards", "2", "--item-shards", "1")
    for amount in (100, 200, 300):  # in the inbox before any worker: moved as one bundle
        stack.ok("producer", "produce", "topup", "--user", str(U0), "--amount", str(amount))
    fleet = stack.workers(0)
    fleet.start({"EVENTFLEET_SNAPSHOT_INTERVAL_S": "3600"})
    stack.idle()
    worker = stack.client("worker")
    entries = worker.xrange(_key("u0", "events"))
    assert len(entries) == 1 and is_bundle(entries[0][1][EVENT_FIELD]), entries
    worker.sadd(_key("u0", "poison"), entries[0][0])  # what a leaked worker credential may do
    lease = worker.get(_key("u0", "lease"))
    worker.delete(_key("u0", "lease"))
    wait_for(
        lambda: worker.get(_key("u0", "lease")) not in (None, lease), 60, "a new takeover of u0"
    )
    stack.idle()
    assert str(U0) not in stack.state()["users"]  # the takeover dead-lettered it
    dead = json.loads(stack.ok("admin", "dlq", "list", "--json"))
    assert len(dead) == 1 and is_bundle(dead[0]["raw"])

    redriven = json.loads(stack.ok("admin", "dlq", "redrive", "--json"))
    assert redriven["redriven"] == 1 and redriven["still_invalid"] == [], redriven
    stack.idle()
    assert stack.state()["users"][str(U0)]["balance"] == 600
    again = json.loads(stack.ok("admin", "dlq", "redrive", "--json"))  # nothing left to send
    assert again["redriven"] == 0, again
    stack.idle()
    assert stack.state()["users"][str(U0)]["balance"] == 600
