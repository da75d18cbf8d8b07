"""Containment: one producer identity floods its own inboxes with 20 KB junk (raw RPUSHX with
its own credentials, around the client) and through the client, on a Redis with the shipped
ACL file and a small maxmemory, while two other producers publish. Their shards keep
applying throughout; the flooder's client gets BacklogFull; its junk is dropped and counted,
never applied; when the flood stops every inbox empties by itself and ``verify`` passes.

The short version runs in CI (fleet tier); the long one (more rounds, a tighter maxmemory) is
behind the chaos marker.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
import redis

import eventfleet
from eventfleet.client import BacklogFull
from eventfleet.ledger.shards import ShardCounts
from eventfleet.ops.status import is_idle
from eventfleet.store.keys import Keys
from tests.secure_redis import connect, ok, run_cli, wait_for
from tests.test_producer_acl import worker
from tests.test_producer_identity import admin_env

COUNTS = ShardCounts(2, 2)
KEYS = Keys("eventfleet")
JUNK = b"x" * 20_000


def _url(admin: dict[str, str], name: str) -> str:
    return str(json.loads(ok(run_cli(admin, "producers", "add", name, "--json")))["redis_url"])


def _credited(root: redis.Redis) -> int:
    """The sum of every balance in the read models (each honest top-up is 1)."""
    total = 0
    for s in ("u0", "u1"):
        for f, v in root.hgetall(KEYS.model(s)).items():
            if (f.decode() if isinstance(f, bytes) else f).startswith("b:"):
                total += int(v)
    return total


def flood(port: int, tmp_path: Path, rounds: int, maxmemory: str) -> None:
    admin = admin_env(port)
    ok(run_cli(admin, "init", "--user-shards", "2", "--item-shards", "2"))
    root = connect(port, "root")
    root.config_set("maxmemory", maxmemory)
    root.config_set("maxmemory-policy", "noeviction")
    flood_url, honest = _url(admin, "flooder"), [_url(admin, n) for n in ("shop", "billing")]
    stop = threading.Event()
    refused: list[BacklogFull] = []
    errors: list[BaseException] = []

    def raw_flood() -> None:  # its own credentials, around the client
        r = redis.Redis.from_url(flood_url)
        try:
            while not stop.is_set():
                pipe = r.pipeline(transaction=False)
                for s in ("u0", "u1", "i0", "i1"):  # big junk, and many small elements
                    pipe.rpushx(KEYS.inbox(s, "flooder"), *([JUNK] * 10), *([b"z"] * 3000))
                pipe.execute(raise_on_error=False)  # OOM refusals are the flooder's problem
        except BaseException as exc:
            errors.append(exc)

    def client_flood() -> None:
        with eventfleet.Client.from_url(flood_url, namespace="eventfleet") as c:
            while not stop.is_set():
                try:
                    c.topup(99, 1_000_000)
                except BacklogFull as exc:
                    refused.append(exc)
                    time.sleep(0.01)
                except eventfleet.client.Unavailable:
                    time.sleep(0.01)

    def publish(url: str, users: range) -> None:
        with eventfleet.Client.from_url(url, namespace="eventfleet") as c:
            while not stop.is_set():
                for u in users:
                    try:
                        c.topup(u, 1)
                    except eventfleet.client.Unavailable as exc:  # never expected: report it
                        errors.append(exc)
                        return

    threads = [threading.Thread(target=raw_flood), threading.Thread(target=client_flood)]
    threads += [threading.Thread(target=publish, args=(u, range(i * 10 + 1, i * 10 + 6)))
                for i, u in enumerate(honest)]  # fmt: skip
    with worker(port, tmp_path):
        for t in threads:
            t.start()
        try:
            seen = _credited(root)
            for _ in range(rounds):  # the others' applied count keeps rising during the flood
                before = seen
                wait_for("honest top-ups applied during the flood",
                         lambda b=before: _credited(root) > b + 50, 30)  # fmt: skip
                seen = _credited(root)
            wait_for("the flooder's client refused", lambda: bool(refused), 30)
        finally:
            stop.set()
            for t in threads:
                t.join(60)
        assert not errors, errors
        wait_for("every inbox empty", lambda: is_idle(root, KEYS, COUNTS), 60)
        rows = {r["name"]: r for r in json.loads(ok(run_cli(admin, "producers", "list", "--json")))}
        assert rows["flooder"]["dropped"] > 0 and rows["flooder"]["waiting"] == 0
        assert rows["shop"]["dropped"] == 0 and rows["billing"]["dropped"] == 0
        assert "backlog full" in str(refused[0]) and refused[0].retry_after > 0
        # no junk reached a log: nothing dead-lettered, only real top-ups applied
        assert json.loads(ok(run_cli(admin, "dlq", "list", "--json"))) == []
    assert json.loads(ok(run_cli(admin, "verify", "--json")))["ok"]


def test_a_flooding_producer_hurts_only_itself(port: int, tmp_path: Path) -> None:
    flood(port, tmp_path, rounds=3, maxmemory="100mb")


@pytest.mark.chaos
def test_a_long_flood_at_a_tight_maxmemory(port: int, tmp_path: Path) -> None:
    flood(port, tmp_path, rounds=30, maxmemory="40mb")
