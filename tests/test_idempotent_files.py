"""`produce file --source NAME` under the shipped ACL: a file's lines are numbered by the file
itself, so running it again after a SIGKILL at any point applies every line exactly once;
without --source each run is a new producer (today's behaviour)."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest

from eventfleet.local.fleet import LocalFleet
from tests.acl_stack import AclStack
from tests.secure_redis import connect

SHARDS = [f"u{n}" for n in range(4)] + [f"i{n}" for n in range(4)]


def _topups(path: Path, n: int, users: int = 97) -> int:
    """``n`` top-ups (and a blank line now and then); returns the money they carry."""
    lines = []
    total = 0
    for i in range(n):
        amount = 1 + i % 7
        total += amount
        lines.append(json.dumps({"type": "topup", "user_id": 1 + i % users, "amount": amount}))
        if i % 1000 == 500:
            lines.append("")  # blank lines are skipped but still count as lines
    path.write_text("\n".join(lines) + "\n")
    return total


def _balances(stack: AclStack) -> int:
    return sum(u["balance"] for u in stack.state()["users"].values())


def test_rerun_after_sigkill_applies_every_line_once(
    port: int, tmp_path: Path, fleet_factory: list[LocalFleet]
) -> None:
    stack = AclStack(port, tmp_path, fleet_factory)
    stack.init("--user-shards", "4", "--item-shards", "4")
    path = tmp_path / "topups.jsonl"
    total = _topups(path, 5000)
    root = connect(port, "root", decode_responses=False)

    run = stack.popen("producer", "produce", "file", str(path), "--source", "nightly-1")
    deadline = time.monotonic() + 120
    while stack.event_count(root, SHARDS) < 1000 and run.poll() is None:
        assert time.monotonic() < deadline, "the first 1,000 lines never landed"
    run.send_signal(signal.SIGKILL)
    run.wait()
    landed = stack.event_count(root, SHARDS)
    assert landed >= 1000

    out = stack.ok("producer", "produce", "file", str(path), "--source", "nightly-1")
    assert "published 5000 events as source p:nightly-1" in out
    stack.workers(2)
    stack.idle()
    assert _balances(stack) == total, f"{landed} lines had landed when the first run was killed"
    report = stack.verify()
    assert report["ok"], report
    assert report["totals"]["applied"] == 5000
    assert report["totals"]["duplicates_dropped"] == landed

    # and once more, with workers running: nothing changes
    stack.ok("producer", "produce", "file", str(path), "--source", "nightly-1")
    stack.idle()
    assert _balances(stack) == total


@pytest.mark.parametrize("source", [None, "daily"])
def test_each_run_without_a_source_is_a_new_producer(
    port: int, tmp_path: Path, fleet_factory: list[LocalFleet], source: str | None
) -> None:
    stack = AclStack(port, tmp_path, fleet_factory)
    stack.init("--user-shards", "2", "--item-shards", "2")
    path = tmp_path / "small.jsonl"
    total = _topups(path, 40, users=5)
    args = ["produce", "file", str(path)] + (["--source", source] if source else [])
    stack.ok("producer", *args)
    stack.ok("producer", *args)
    stack.workers(1)
    stack.idle()
    assert _balances(stack) == (total if source else 2 * total)


@pytest.mark.parametrize("name", ["", "has space", "x" * 63, "dlq/u1"])
def test_a_bad_source_name_is_one_line_and_sends_nothing(
    port: int, tmp_path: Path, name: str
) -> None:
    stack = AclStack(port, tmp_path, [])
    stack.init("--user-shards", "1", "--item-shards", "1")
    path = tmp_path / "one.jsonl"
    _topups(path, 3)
    result = stack.run("producer", "produce", "file", str(path), "--source", name)
    assert result.returncode == 2, result
    assert result.stderr.count("\n") == 1 and "source name" in result.stderr, result.stderr
    root = connect(port, "root", decode_responses=False)
    assert stack.event_count(root, ["u0", "i0"]) == 0


@pytest.mark.parametrize("cut", [0, 1, 999, 1000, 1001, 2718, 4999, 5000])
def test_a_rerun_from_any_cut_point_applies_every_line_once(
    port: int, tmp_path: Path, cut: int
) -> None:
    """A first run that got exactly ``cut`` lines out (in file order, as one connection sends
    them) before it died, then the full file again: every line once, whatever the cut."""
    from eventfleet.ledger.shards import ShardCounts
    from eventfleet.ops.reader import state_all
    from eventfleet.producer.client import Producer
    from eventfleet.producer.files import parse_lines
    from eventfleet.store.keys import Keys

    stack = AclStack(port, tmp_path, [])
    stack.init("--user-shards", "4", "--item-shards", "4")
    path = tmp_path / "topups.jsonl"
    total = _topups(path, 5000)
    lines: list[int] = []
    with path.open("rb") as f:
        events = parse_lines(f, lines)
    counts, keys = ShardCounts(4, 4), Keys("eventfleet")
    producer = stack.client("producer")
    Producer(producer, keys, counts, name="cut").publish(events[:cut], seqs=lines[:cut])
    Producer(producer, keys, counts, name="cut").publish(events, seqs=lines)
    doc = state_all(stack.client("admin"), keys, counts)
    assert sum(u["balance"] for u in doc["users"].values()) == total


LEDGER = ("topups", "balances", "confirmed_amount", "added", "remain", "confirmed_qty", "orders")


def test_produce_load_with_a_source_run_twice_applies_every_event_once(
    port: int, tmp_path: Path, fleet_factory: list[LocalFleet]
) -> None:
    """The compose file's one-shot `producer` (`produce load ... --source compose-load`) may be
    started again (`docker compose up -d` restarts exited containers): the seeded workload is
    the same events with the same numbers, so the second run changes nothing in the ledger,
    while it runs (workers up) or before any worker starts."""
    stack = AclStack(port, tmp_path, fleet_factory)
    stack.init("--user-shards", "4", "--item-shards", "4")
    args = ["produce", "load", "--events", "3000", "--seed", "7", "--source", "compose-load"]
    out = stack.ok("producer", *args)
    assert "published 3000 events as source p:compose-load" in out
    stack.ok("producer", *args)  # before any worker: both runs wait in the inboxes
    stack.workers(2)
    stack.idle()
    first = stack.verify()
    assert first["ok"], first
    stack.ok("producer", *args)  # with workers running
    stack.idle()
    second = stack.verify()
    assert second["ok"], second
    for report in (first, second):
        t = report["totals"]
        assert t["orders"] > 0 and t["topups"] > 0 and t["added"] > 0
        assert "duplicate" not in t["outcomes"], t["outcomes"]
    assert {k: second["totals"][k] for k in LEDGER} == {k: first["totals"][k] for k in LEDGER}
    assert second["totals"]["outcomes"] == first["totals"]["outcomes"]
    assert second["totals"]["applied"] == first["totals"]["applied"]
