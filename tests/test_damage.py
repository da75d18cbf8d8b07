"""What a leaked worker credential can do, done with the shipped `eventfleet-worker` ACL user,
and what the fleet and the tools make of it (issue 23): a snapshot that does not decode is
quarantined and the shard rebuilt from what is provable, or left unowned with one line, never
a crash loop; `status` and `state` name the shard and why; `verify` reports the damage."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from eventfleet.ledger.shards import ShardCounts, user_shard
from eventfleet.local.fleet import LocalFleet
from tests.acl_stack import AclStack
from tests.fleet_utils import log_lines
from tests.helpers import wait_for

COUNTS = ShardCounts(2, 1)
U0, U1 = 4, 1  # users on u0 and u1
GARBAGE = b'{"v": 2, "shard": "u0", "last_id": "not a snapshot'


def _key(shard: str, what: str) -> str:
    return f"eventfleet:{{{shard}}}:{what}"


def _stack(port: int, tmp_path: Path, fleets: list[LocalFleet]) -> AclStack:
    assert (user_shard(U0, COUNTS), user_shard(U1, COUNTS)) == ("u0", "u1")
    stack = AclStack(port, tmp_path, fleets)
    stack.init("--user-shards", "2", "--item-shards", "1")
    for user in (U0, U1):
        for _ in range(3):
            stack.ok("producer", "produce", "topup", "--user", str(user), "--amount", "100")
    fleet = stack.workers(1)
    stack.idle()
    fleet.stop_all()  # drained: final snapshots written, leases released
    return stack


def _owned(stack: AclStack) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(stack.ok("admin", "status", "--json"))
    return {row["shard"]: row for row in doc["shards"]}


def test_a_garbage_snapshot_is_quarantined_and_the_shard_rebuilt(
    port: int, tmp_path: Path, fleet_factory: list[LocalFleet]
) -> None:
    stack = _stack(port, tmp_path, fleet_factory)
    worker = stack.client("worker")
    worker.set(_key("u0", "snapshot"), GARBAGE)  # what a leaked worker credential may do

    # status and state say which shard and why, in one line, without a traceback
    shown = stack.run("admin", "status")
    assert shown.returncode == 0, shown.stderr
    assert "u0: snapshot does not decode" in shown.stdout and "Traceback" not in shown.stderr
    read = stack.run("admin", "state", "user", str(U0))
    assert read.returncode == 0 and f"user {U0}: balance 300" in read.stdout, read
    assert read.stderr.count("\n") == 1 and "shard u0: its snapshot does not decode" in read.stderr

    fleet = stack.workers(1)
    w = fleet.live()[-1]
    wait_for(lambda: worker.get(_key("u0", "quarantine")) == GARBAGE, 60, "the quarantine copy")
    wait_for(
        lambda: _owned(stack)["u0"]["owner"] and _owned(stack)["u0"]["snapshot_error"] is None,
        60, "u0 owned again, with a snapshot that decodes",
    )  # fmt: skip
    stack.ok("producer", "produce", "topup", "--user", str(U0), "--amount", "5")
    stack.idle()
    assert stack.state()["users"][str(U0)]["balance"] == 305
    assert w.alive
    said = [e for e in log_lines(w) if e.get("event") == "snapshot_quarantined"]
    assert len(said) == 1 and said[0]["rebuilt_from"] == "full log", said
    assert stack.verify()["ok"]
    assert "a snapshot that did not decode is kept" in stack.ok("admin", "status")


def test_no_provable_state_leaves_the_shard_unowned_with_one_line(
    port: int, tmp_path: Path, fleet_factory: list[LocalFleet]
) -> None:
    stack = _stack(port, tmp_path, fleet_factory)
    worker = stack.client("worker")
    events = _key("u0", "events")
    worker.set(_key("u0", "snapshot"), GARBAGE)
    worker.copy(_key("u0", "snapshot"), _key("u0", "trimbase"), replace=True)
    worker.xtrim(events, minid="9999999999999-0")  # every entry of its log is gone

    fleet = stack.workers(1)
    w = fleet.live()[-1]
    wait_for(lambda: worker.get(_key("u0", "quarantine")) == GARBAGE, 60, "the quarantine copy")
    wait_for(lambda: _owned(stack)["u1"]["owner"], 60, "u1 owned")
    stack.ok("producer", "produce", "topup", "--user", str(U1), "--amount", "5")
    wait_for(
        lambda: json.loads(stack.ok("admin", "state", "user", str(U1), "--json"))["balance"]
        == 305 and not _owned(stack)["u1"]["inbox"],
        60, "the other user shard applying",
    )  # fmt: skip
    assert _owned(stack)["u0"]["owner"] is None and w.alive
    said = [e for e in log_lines(w) if e.get("event") == "snapshot_quarantined"]
    assert len(said) == 1 and said[0]["unowned"] is True, said

    shown = stack.run("admin", "status")
    assert "u0: snapshot does not decode" in shown.stdout and "unowned" in shown.stdout
    read = stack.run("admin", "state", "user", str(U0))
    assert read.returncode == 3 and read.stdout == "", read
    assert read.stderr.startswith("error: shard u0: its snapshot does not decode")
    assert read.stderr.count("\n") == 1, read.stderr


def test_a_log_trimmed_before_its_snapshot_is_reported(
    port: int, tmp_path: Path, fleet_factory: list[LocalFleet]
) -> None:
    """Entries trimmed after the latest snapshot, then a takeover forced: the takeover says so
    (a log line and `eventfleet_takeover_log_gaps_total`), and `verify` reports the loss even
    once a later snapshot covers the gap (before: `verify` passed, 300 of credit gone)."""
    stack = AclStack(port, tmp_path, fleet_factory)
    stack.init("--user-shards", "2", "--item-shards", "1")
    fleet = stack.workers(0)
    w = fleet.start({"EVENTFLEET_SNAPSHOT_INTERVAL_S": "3600"})  # no snapshot after the start
    wait_for(lambda: _owned(stack)["u0"]["owner"], 60, "u0 owned")
    for _ in range(3):
        stack.ok("producer", "produce", "topup", "--user", str(U0), "--amount", "100")
    stack.idle()
    worker = stack.client("worker")
    worker.xtrim(_key("u0", "events"), minid="9999999999999-0")
    lease = worker.get(_key("u0", "lease"))
    worker.delete(_key("u0", "lease"))  # the owner loses it and takes the shard over again
    wait_for(
        lambda: worker.get(_key("u0", "lease")) not in (None, lease), 60, "a new takeover of u0"
    )
    said = wait_for(
        lambda: [e for e in log_lines(w) if e.get("event") == "log_entries_missing"],
        60, "the takeover's line",
    )  # fmt: skip
    assert said[0]["shard"] == "u0"
    report = stack.verify()
    assert not report["ok"] and report["lost"] >= 1, report

    stack.ok("producer", "produce", "topup", "--user", str(U0), "--amount", "5")
    stack.idle()
    fleet.stop_all()  # the final snapshot covers the gap now
    result = stack.run("admin", "verify")
    assert result.returncode == 3, result
    assert "entries were removed from the log before any snapshot covered them" in result.stdout


def test_a_poison_mark_on_an_applied_entry_is_reported(
    port: int, tmp_path: Path, fleet_factory: list[LocalFleet]
) -> None:
    """An applied entry added to the poison set, then a takeover forced: the takeover
    dead-letters it as the set says (every fold must decide the same) but says so (a log line,
    `eventfleet_suspect_poison_marks_total`, the letter's error), `verify` reports it, and
    `dlq redrive` gives the credit back (before: `verify` passed with 300 of credit gone)."""
    stack = AclStack(port, tmp_path, fleet_factory)
    stack.init("--user-shards", "2", "--item-shards", "1")
    fleet = stack.workers(0)
    w = fleet.start({"EVENTFLEET_SNAPSHOT_INTERVAL_S": "3600"})
    wait_for(lambda: _owned(stack)["u0"]["owner"], 60, "u0 owned")
    for _ in range(3):  # one entry each (not one bundle), applied before the next is sent
        stack.ok("producer", "produce", "topup", "--user", str(U0), "--amount", "100")
        stack.idle()
    worker = stack.client("worker")
    applied = [eid for eid, _ in worker.xrange(_key("u0", "events"))]
    assert len(applied) == 3
    worker.sadd(_key("u0", "poison"), *applied)
    lease = worker.get(_key("u0", "lease"))
    worker.delete(_key("u0", "lease"))
    wait_for(
        lambda: worker.get(_key("u0", "lease")) not in (None, lease), 60, "a new takeover of u0"
    )
    said = wait_for(
        lambda: [e for e in log_lines(w) if e.get("event") == "poison_mark_suspect"],
        60, "the takeover's line",
    )  # fmt: skip
    assert {e["entry_id"] for e in said} == {eid.decode() for eid in applied}
    stack.idle()
    result = stack.run("admin", "verify")
    assert result.returncode == 3, result
    assert "is marked poison but an owner had applied it" in result.stdout
    stack.ok("admin", "dlq", "redrive")
    stack.idle()
    assert stack.state()["users"][str(U0)]["balance"] == 300


def test_an_inbox_cut_is_reported(
    port: int, tmp_path: Path, fleet_factory: list[LocalFleet]
) -> None:
    """Top-ups a producer was told were accepted, cut from the inbox before a worker moved them
    (LTRIM as the worker user): the next move starts from a head that is not the last element
    moved, and `verify` reports it (before: `verify` passed, 300 of 500 gone)."""
    stack = AclStack(port, tmp_path, fleet_factory)
    stack.init("--user-shards", "2", "--item-shards", "1")
    for _ in range(5):
        stack.ok("producer", "produce", "topup", "--user", str(U0), "--amount", "100")
    worker = stack.client("worker")
    assert worker.llen(_key("u0", "inbox")) == 6  # the head and five top-ups
    worker.ltrim(_key("u0", "inbox"), 3, -1)  # the first three are gone, the 3rd is the head
    stack.workers(1)
    stack.idle()
    assert stack.state()["users"][str(U0)]["balance"] == 200
    result = stack.run("admin", "verify")
    assert result.returncode == 3, result
    assert "were cut from the inbox before they reached the log" in result.stdout
