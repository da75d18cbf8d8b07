"""What the producer's credentials can do with the shipped ACL file, end to end: forgeries
through the only write it has (RPUSHX into a shard's inbox) never take effect and never move a
watermark, while the real saga around them completes; a shard log that refuses entries stops
neither ``produce`` nor the worker. Each process logs in as its documented user on a real
redis-server running deploy/redis/users.acl (tests/secure_redis.py).

The single commands the producer is refused (XADD with MAXLEN, MINID or an explicit id, new
keys, other shards' keys) are in tests/test_acl.py.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import redis
from redis import exceptions as rx

from eventfleet.ledger.codec import encode
from eventfleet.ledger.events import AddItem, Order, Topup
from eventfleet.ledger.shards import ShardCounts, item_shard, user_shard
from eventfleet.ops.status import is_idle
from eventfleet.producer.client import Producer
from eventfleet.store.keys import Keys
from tests.secure_redis import (
    cli_env,
    connect,
    eventfleet_binary,
    free_port,
    ok,
    run_cli,
    wait_for,
)

COUNTS = ShardCounts(2, 2)
KEYS = Keys("eventfleet")


@contextmanager
def worker(port: int, tmp_path: Path) -> Iterator[Path]:
    """One `eventfleet worker` logged in as eventfleet-worker; yields its log file."""
    env = cli_env(
        f"redis://127.0.0.1:{port}/0",
        "worker",
        extra={"EVENTFLEET_METRICS_PORT": str(free_port()), "EVENTFLEET_BLOCK_MS": "50"},
    )
    log_path = tmp_path / "worker.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [str(eventfleet_binary()), "worker"], env=env, stdout=log, stderr=log
        )
    try:
        yield log_path
        assert proc.poll() is None, f"the worker exited:\n{log_path.read_text()[-3000:]}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    text = log_path.read_text()
    assert "Traceback" not in text and "NOPERM" not in text, text[-3000:]


def _init(port: int) -> dict[str, str]:
    admin = cli_env(f"redis://127.0.0.1:{port}/0", "admin")
    ok(run_cli(admin, "init", "--user-shards", "2", "--item-shards", "2"))
    return admin


def _state(admin: dict[str, str]) -> Any:
    return json.loads(ok(run_cli(admin, "state", "all", "--json")))


def _letters(root: redis.Redis, shard: str) -> list[tuple[str, str]]:
    return [(f["reason"], f["raw"]) for _id, f in root.xrange(KEYS.dlq(shard))]


def _wait_idle(root: redis.Redis) -> None:
    wait_for("the fleet to become idle", lambda: is_idle(root, KEYS, COUNTS), 90)


def test_forged_charge_and_release_never_take_effect(port: int, tmp_path: Path) -> None:
    admin = _init(port)
    root = connect(port, "root", decode_responses=True)
    as_producer = connect(port, "producer", decode_responses=False)
    producer = Producer(as_producer, KEYS, COUNTS)
    sku = "sku-1"
    ushard, ishard = user_shard(1, COUNTS), item_shard(sku, COUNTS)
    producer.publish([AddItem(item_id=sku, count=10, price=5), Topup(user_id=1, amount=100)])
    # The forgeries, through the one write the producer has: a charge from the item shard
    # with a huge seq (it would take the money, confirm a fake order and make the item
    # shard's real charges duplicates) and a release of a million from the user shard of
    # user 2 (stock from nothing, and the real release after it dropped).
    poor_shard = user_shard(2, COUNTS)
    charge = {"type": "charge", "order_id": "fake", "user_id": 1, "item_id": sku, "qty": 1,
              "amount": 100, "source": ishard, "seq": 1_000_000}  # fmt: skip
    release = {"type": "release", "order_id": "fake", "item_id": sku, "qty": 1_000_000,
               "source": poor_shard, "seq": 1}  # fmt: skip
    assert as_producer.rpushx(KEYS.inbox(ushard), json.dumps(charge)) > 1
    assert as_producer.rpushx(KEYS.inbox(ishard), json.dumps(release)) > 1
    with pytest.raises(rx.NoPermissionError):
        as_producer.xadd(KEYS.events(ushard), {"event": json.dumps(charge)})
    # The real saga around them: one order paid, one refused for funds (its stock released).
    producer.publish(
        [
            Order(order_id="real", user_id=1, item_id=sku, qty=2),
            Order(order_id="poor", user_id=2, item_id=sku, qty=3),
        ]
    )
    with worker(port, tmp_path):
        _wait_idle(root)
        state = _state(admin)
    assert state["users"]["1"] == {"balance": 90}
    assert state["items"][sku]["remain"] == 8  # 10 - 2 confirmed; the 3 refused came back
    outcomes = {oid: (o["status"], o["reason"]) for oid, o in state["orders"].items()}
    assert outcomes == {"real": ("confirmed", None), "poor": ("rejected", "insufficient_funds")}
    assert [r for r, _ in _letters(root, ushard)] == ["forged_internal"]
    assert [r for r, _ in _letters(root, ishard)] == ["forged_internal"]
    report = json.loads(ok(run_cli(admin, "verify", "--json")))
    assert report["ok"], report


def test_a_shard_log_that_refuses_entries_stops_neither_produce_nor_the_worker(
    port: int, tmp_path: Path
) -> None:
    admin = _init(port)
    root = connect(port, "root", decode_responses=True)
    producer_env = cli_env(f"redis://127.0.0.1:{port}/0", "producer")
    stuck, fine = user_shard(1, COUNTS), None
    other = next(u for u in range(2, 100) if user_shard(u, COUNTS) != stuck)
    fine = user_shard(other, COUNTS)
    # Only an admin can still do this; the log then takes no entry with a generated id.
    root.xadd(KEYS.events(stuck), {"event": "{}"}, id="18446744073709551615-18446744073709551615")
    with worker(port, tmp_path) as log_path:
        res = run_cli(producer_env, "produce", "topup", "--user", "1", "--amount", "5")
        assert res.returncode == 0 and "Traceback" not in res.stderr, res.stderr
        ok(run_cli(producer_env, "produce", "topup", "--user", str(other), "--amount", "7"))
        wait_for(
            "the other shard's top-up",
            lambda: _state(admin)["users"].get(str(other)) == {"balance": 7},
            60,
        )
        wait_for(
            "the blocked shard to be reported",
            lambda: "shard_log_blocked" in log_path.read_text(),
            60,
        )
    status = json.loads(ok(run_cli(admin, "status", "--json")))
    inbox = {s["shard"]: s["inbox"] for s in status["shards"]}
    assert inbox[stuck] == 1 and inbox[fine] == 0  # the top-up waits, nothing is lost
    line = next(
        json.loads(x) for x in log_path.read_text().splitlines() if "shard_log_blocked" in x
    )
    assert line["shard"] == stuck and "exhausted" in line["error"]


def test_produce_into_a_missing_inbox_is_one_clear_line(port: int) -> None:
    _init(port)
    root = connect(port, "root", decode_responses=True)
    root.delete(KEYS.inbox(user_shard(1, COUNTS)))
    producer_env = cli_env(f"redis://127.0.0.1:{port}/0", "producer")
    res = run_cli(producer_env, "produce", "topup", "--user", "1", "--amount", "5")
    assert res.returncode != 0
    assert "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert "does not exist: run `eventfleet init`" in res.stderr
    assert root.exists(KEYS.inbox(user_shard(1, COUNTS))) == 0  # RPUSHX created nothing


def test_hostile_entries_through_the_producer_change_nothing_but_dead_letters(
    port: int, tmp_path: Path
) -> None:
    """The table's content rows as the producer user can send them: 30,000 and 100,000
    nested ``[`` between two valid top-ups, an order whose amount passes 2^53, and a top-up
    with seq 10^12 (a gap). Only the nested entries are dead-lettered; the order is rejected
    with stock untouched; ``state``, ``verify`` and ``dlq list`` read it all."""
    admin = _init(port)
    root = connect(port, "root", decode_responses=True)
    as_producer = connect(port, "producer", decode_responses=False)
    producer = Producer(as_producer, KEYS, COUNTS)
    ushard, ishard = user_shard(5, COUNTS), item_shard("gold", COUNTS)
    producer.publish([Topup(user_id=5, amount=10)])
    assert as_producer.rpushx(KEYS.inbox(ushard), "[" * 30_000, "[" * 100_000) > 2
    producer.publish(
        [
            Topup(user_id=5, amount=32),
            AddItem(item_id="gold", count=5, price=2**53 - 1),
            Order(order_id="big", user_id=5, item_id="gold", qty=2),
        ]
    )
    late = encode(Topup(user_id=5, amount=1), producer.source, 10**12)
    assert as_producer.rpushx(KEYS.inbox(ushard), late) > 1
    with worker(port, tmp_path):
        _wait_idle(root)
    state = _state(admin)
    assert state["users"]["5"] == {"balance": 43}
    assert state["items"]["gold"]["remain"] == 5
    assert (state["orders"]["big"]["status"], state["orders"]["big"]["reason"]) == (
        "rejected",
        "amount_too_large",
    )
    assert sorted(r for r, _ in _letters(root, ushard)) == ["bad_json", "too_large"]
    assert _letters(root, ishard) == []
    report = json.loads(ok(run_cli(admin, "verify", "--json")))
    assert report["ok"] and report["lost"] == 0, report
    ok(run_cli(admin, "dlq", "list"))
