"""A chaos run with HTTP clients: clients post top-ups and orders (``?wait=5``) through
``eventfleet api`` with an Idempotency-Key each, retrying the same key and body on 503, 409
in-progress and broken connections, while workers are SIGKILLed (and replaced) and Redis, as
we ship it, restarts. Afterwards: ``eventfleet verify`` passes, every retried key applied once
(each user's balance is its top-ups minus its confirmed orders, each key counted once), and
every outcome a client was told (200) is the order's outcome for good.

A short run in the fleet tier; the long one behind the chaos marker."""

from __future__ import annotations

import http.client
import json
import random
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import redis

pytest.importorskip("fastapi")

from eventfleet.ledger.shards import ShardCounts
from eventfleet.local.api import LocalApi
from eventfleet.local.fleet import LocalFleet
from eventfleet.local.redisserver import LocalRedis
from eventfleet.ops.status import is_idle
from eventfleet.store.keys import Keys
from tests.api_helpers import bearer, call
from tests.helpers import wait_for
from tests.shipped import init_shipped, login
from tests.test_restart_shipped import cli_process, env_of

NS = "eventfleet"
COUNTS = ShardCounts(4, 4)
USERS = range(1, 11)
ITEMS = [f"sku-{i}" for i in range(4)]
SEED = 1_000_000
RETRY = {503, 429}


class Clients:
    """Threads that each send one request at a time, retrying a key until it is answered."""

    def __init__(self, base: str, auth: dict[str, str], n: int, seconds: float) -> None:
        self.base, self.auth = base, auth
        self.until = time.monotonic() + seconds
        self.topups: dict[str, tuple[int, int]] = {}
        self.told: dict[tuple[int, str], str] = {}
        self.placed: list[tuple[int, str]] = []
        self.retries = 0
        self.errors: list[str] = []
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.run, args=(i,)) for i in range(n)]

    def send(self, path: str, body: dict[str, Any], key: str) -> tuple[int, Any]:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                status, _, doc = call(
                    self.base, "POST", path, body, {**self.auth, "Idempotency-Key": key}, timeout=20
                )
            except (OSError, http.client.HTTPException):
                status, doc = 0, None
            in_progress = status == 409 and doc["type"].endswith(":key-in-progress")
            if status in RETRY or status == 0 or in_progress:
                with self.lock:
                    self.retries += 1
                time.sleep(0.05)
                continue
            return status, doc
        raise AssertionError(f"{path} {key}: never answered")

    def run(self, i: int) -> None:
        rng = random.Random(i)
        try:
            k = 0
            while time.monotonic() < self.until:
                k += 1
                user = rng.choice(list(USERS))
                if rng.random() < 0.6:
                    key, amount = f"t{i}-{k}", rng.randint(1, 50)
                    status, doc = self.send("/v1/topups", {"user": user, "amount": amount}, key)
                    assert status == 202, (status, doc)
                    with self.lock:
                        self.topups[key] = (user, amount)
                else:
                    oid = f"o{i}-{k}"
                    body = {"user": user, "item": rng.choice(ITEMS), "qty": rng.randint(1, 3)}
                    status, doc = self.send("/v1/orders?wait=5", {**body, "order_id": oid}, oid)
                    assert status in (200, 202), (status, doc)
                    with self.lock:
                        self.placed.append((user, oid))
                        if status == 200:
                            self.told[(user, oid)] = doc["first"] or doc["status"]
        except BaseException as exc:
            self.errors.append(repr(exc)[:500])


class Faults:
    """Every 2 s: a Redis restart (up to ``restarts``; killed or stopped) or a worker SIGKILL
    and its replacement, until the clients are done."""

    def __init__(self, server: LocalRedis, fleet: LocalFleet, restarts: int) -> None:
        self.server, self.fleet, self.most = server, fleet, restarts
        self.restarts = self.kills = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run)

    def run(self) -> None:
        rng = random.Random(5)
        while not self.stop.wait(2.0):
            if self.restarts < self.most and (self.kills > 0 and rng.random() < 0.4):
                self.server.restart(kill=rng.random() < 0.5)
                self.restarts += 1
            elif live := self.fleet.live():
                self.fleet.kill(rng.choice(live))
                self.fleet.start()
                self.kills += 1


def run_chaos(tmp: Path, clients: int, seconds: float, restarts: int) -> None:
    server = LocalRedis(workdir=tmp / "redis", shipped=True).start()
    assert server.logins is not None
    logins = server.logins
    init_shipped(server, NS)
    fleet = LocalFleet(server.url, NS, tmp / "logs", env=logins.env("worker"))
    for _ in range(2):
        fleet.start()
    api = LocalApi(server.url, NS, tmp / "api.log", env=logins.env("api")).start()
    auth = bearer(logins.user("producer"), logins.password("producer"))
    f = Faults(server, fleet, restarts)
    try:
        for item in ITEMS:
            body = {"item": item, "count": 1_000_000, "price": 1}
            assert call(api.url, "POST", "/v1/items", body, auth)[0] == 202
        for user in USERS:
            body = {"user": user, "amount": SEED}
            assert call(api.url, "POST", "/v1/topups", body, auth)[0] == 202
        c = Clients(api.url, auth, clients, seconds)
        f.thread.start()
        for t in c.threads:
            t.start()
        for t in c.threads:
            t.join(timeout=600)
        f.stop.set()
        f.thread.join(timeout=60)
        assert not c.errors, c.errors[:3]
        if not fleet.live():
            fleet.start()
        admin: redis.Redis = login(server, "admin")
        wait_for(lambda: is_idle(admin, Keys(NS), COUNTS), 180, "the fleet to become idle")
        cli_process("verify", env=env_of(server.url, logins, "admin"))
        final: dict[tuple[int, str], str] = {}
        for user, oid in c.placed:
            status, _, doc = call(
                api.url, "GET", f"/v1/users/{user}/orders/{oid}?wait=5", None, auth
            )
            assert status == 200, (user, oid, doc)
            final[(user, oid)] = doc["status"]
        for order, said in c.told.items():
            assert final[order] == said, (order, said, final[order])
        credited = {u: SEED for u in USERS}
        for user, amount in c.topups.values():
            credited[user] += amount
        spent = _spent(admin)
        for user in USERS:
            status, _, doc = call(api.url, "GET", f"/v1/users/{user}/balance", None, auth)
            assert doc["balance"] == credited[user] - spent.get(user, 0), user
        print(
            f"http chaos: {len(c.topups)} top-ups, {len(c.placed)} orders ({len(c.told)} told), "
            f"{c.retries} retries, {f.restarts} Redis restarts, {f.kills} worker kills"
        )
        assert f.restarts >= 1 and f.kills >= 1
    finally:
        f.stop.set()
        api.stop()
        fleet.stop_all()
        server.close()


def _spent(admin: redis.Redis) -> dict[int, int]:
    """What each user's confirmed orders cost, from the outcome streams (each order once)."""
    spent: dict[int, int] = {}
    seen: set[tuple[int, str]] = set()
    for shard in COUNTS.all_shards():
        if not shard.startswith("u"):
            continue
        entries: Any = admin.xrange(Keys(NS).outcomes(shard))
        for _eid, fields in entries:
            o = json.loads(fields[b"outcome"])
            if o["status"] == "confirmed" and (o["user_id"], o["order_id"]) not in seen:
                seen.add((o["user_id"], o["order_id"]))
                spent[o["user_id"]] = spent.get(o["user_id"], 0) + int(o["amount"])
    return spent


def test_http_clients_through_worker_kills_and_redis_restarts(tmp_path: Path) -> None:
    run_chaos(tmp_path, clients=4, seconds=20, restarts=2)


@pytest.mark.chaos
@pytest.mark.timeout(1800)
def test_http_clients_long_chaos(tmp_path: Path) -> None:
    run_chaos(tmp_path, clients=8, seconds=600, restarts=30)
