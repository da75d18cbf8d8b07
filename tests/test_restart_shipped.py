"""Redis restarted the way we ship it: the compose file's flags, the shipped ACL file and its
users (``LocalRedis(shipped=True)``), every process logged in as its documented user.

On Redis 7.x a MULTI/EXEC block read back from the append-only file is re-checked as the ACL
``default`` user (redis/redis#14541); with a default user that may not run our scripts'
writes, every multi-write script vanished on reload. These tests restart Redis under load and
hold the ledger to what clients were told.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import redis

from eventfleet.chaos.paced import PacedProducer
from eventfleet.ledger.codec import decode_outcome
from eventfleet.ledger.events import AddItem, Topup
from eventfleet.ledger.shards import ShardCounts
from eventfleet.local.cluster import LocalCluster
from eventfleet.local.fleet import LocalFleet
from eventfleet.local.redisserver import LocalRedis
from eventfleet.local.shipped import Logins
from eventfleet.ops.archive.reader import Archive
from eventfleet.ops.status import is_idle
from eventfleet.ops.verify import verify
from eventfleet.producer.client import Producer
from eventfleet.producer.workload import mixed
from eventfleet.store.keys import Keys
from tests.helpers import wait_for

NS = "eventfleet"
COUNTS = ShardCounts(4, 4)
ITEMS = [f"sku-{i}" for i in range(8)]
USERS = range(1, 41)
RELOAD_ERROR = "AOF-loading-client"
"""What redis-server logs for each transaction it refuses while loading its AOF."""


def cli_process(
    *args: str, env: dict[str, str], check: bool = True, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """``python -m eventfleet <args>`` as a process logged in by ``env`` alone."""
    full = {k: v for k, v in os.environ.items() if not k.startswith(("EVENTFLEET_", "REDIS_"))}
    done = subprocess.run(
        [sys.executable, "-m", "eventfleet", *args],
        env={**full, **env}, capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip
    if check:
        assert done.returncode == 0, f"{args}: exit {done.returncode}\n{done.stderr[-2000:]}"
    return done


def env_of(url: str, logins: Logins, role: str, **extra: str) -> dict[str, str]:
    return {
        "REDIS_URL": url,
        "EVENTFLEET_NAMESPACE": NS,
        "EVENTFLEET_LOG_FORMAT": "json",
        "EVENTFLEET_METRICS_PORT": "0",
        **logins.env(role),
        **extra,
    }


def client_of(port: int, logins: Logins, role: str) -> redis.Redis:
    return redis.Redis(
        host="127.0.0.1", port=port, username=logins.user(role), password=logins.password(role)
    )


def reload_errors(log_dir: Path) -> list[str]:
    return [
        line
        for log in log_dir.rglob("redis.log")
        for line in log.read_text(errors="replace").splitlines()
        if RELOAD_ERROR in line
    ]


def outcome_records(r: redis.Redis, root: Path) -> dict[str, list[str]]:
    """Per order id, the statuses of its outcome records in log order: the archive's, then
    what Redis still holds past them (retention trims what the archive has)."""
    archive = Archive(root, NS, COUNTS)
    found: dict[str, list[str]] = {}
    for shard in COUNTS.all_shards():
        if not shard.startswith("u"):
            continue
        entries = dict(archive.entries(shard, "outcomes"))
        live: Any = r.xrange(Keys(NS).outcomes(shard))
        entries.update((eid.decode(), fields) for eid, fields in live)
        for eid in sorted(entries, key=lambda e: tuple(int(p) for p in e.split("-"))):
            o = decode_outcome(entries[eid][b"outcome"])
            found.setdefault(o.order_id, []).append(o.status)
    return found


class OrderClients:
    """Threads placing one order at a time with `produce order --wait` (a process each) and
    keeping what each was told."""

    def __init__(self, env: dict[str, str], n: int) -> None:
        self.env = env
        self.told: dict[str, str] = {}
        self.errors: list[str] = []
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.run, args=(i,)) for i in range(n)]

    def run(self, i: int) -> None:
        k = 0
        while not self.stop.is_set():
            k += 1
            oid = f"c{i}-{k}"
            done = cli_process(
                "produce", "order", "--user", str(USERS[(i * 7 + k) % len(USERS)]),
                "--item", ITEMS[k % len(ITEMS)], "--qty", "1", "--order-id", oid,
                "--wait", "--timeout", "90", "--json",
                env=self.env, check=False, timeout=150,
            )  # fmt: skip
            if done.returncode == 1 and "cannot reach Redis" in done.stderr:
                k -= 1  # Redis down longer than the command waits: the same order again
                continue  # (an order id placed twice is decided once)
            try:
                status = json.loads(done.stdout)["status"]
            except (ValueError, KeyError):
                with self.lock:
                    self.errors.append(f"{oid}: exit {done.returncode} {done.stderr[-300:]}")
                continue
            with self.lock:
                self.told[oid] = status

    def confirmed(self) -> int:
        with self.lock:
            return sum(1 for s in self.told.values() if s == "confirmed")


def test_confirmed_orders_survive_redis_restarts_as_shipped(
    tmp_path: Path, fleet_factory: list[LocalFleet]
) -> None:
    """Four SIGKILL + restart cycles under paced load, retention trimming only what the
    archive holds, and `--wait` clients: every order a client was told is confirmed stays
    confirmed, `verify` and `verify --archive` pass, Redis refuses nothing on reload."""
    server = LocalRedis(workdir=tmp_path / "redis", shipped=True).start()
    assert server.logins is not None
    logins = server.logins
    archive = tmp_path / "archive"
    try:
        admin_env = env_of(server.url, logins, "admin")
        cli_process("init", "--user-shards", "4", "--item-shards", "4", env=admin_env)
        producer_r = client_of(server.port, logins, "producer")
        seed: list[Any] = [AddItem(item_id=i, count=100_000, price=3) for i in ITEMS]
        seed += [Topup(user_id=u, amount=1_000_000) for u in USERS]
        Producer(producer_r, Keys(NS), COUNTS).publish(seed)
        fleet = LocalFleet(server.url, NS, tmp_path / "workers", env={
            **logins.env("worker"),
            "EVENTFLEET_LEASE_TTL_MS": "1500",
            "EVENTFLEET_SNAPSHOT_INTERVAL_S": "1",
            "EVENTFLEET_RETAIN_S": "0",
            "EVENTFLEET_ARCHIVE_REQUIRED": "1",
        })  # fmt: skip
        fleet_factory.append(fleet)
        fleet.start()
        fleet.start()
        load = PacedProducer(producer_r, Keys(NS), COUNTS, mixed(20_000, seed=7), rate=400)
        load.start()
        clients = OrderClients(env_of(server.url, logins, "producer"), 3)
        for t in clients.threads:
            t.start()
        try:
            for cycle in range(4):
                wanted = clients.confirmed() + 3

                def enough(w: int = wanted) -> bool:
                    return clients.confirmed() >= w

                wait_for(enough, 120, "orders confirmed")
                server.stop(kill=True)
                server.start(timeout=60)
                cli_process("archive", str(archive), env=admin_env)
                assert not reload_errors(tmp_path / "redis"), f"cycle {cycle}"
        finally:
            clients.stop.set()
            load.stop.set()
            for t in clients.threads:
                t.join(timeout=200)
            load.join(timeout=60)
        assert load.error is None, load.error
        assert not clients.errors, clients.errors[:5]
        admin_r = client_of(server.port, logins, "admin")
        wait_for(lambda: is_idle(admin_r, Keys(NS), COUNTS), 120, "the fleet to become idle")
        cli_process("archive", str(archive), env=admin_env)

        confirmed = {oid for oid, s in clients.told.items() if s == "confirmed"}
        assert len(confirmed) >= 12
        records = outcome_records(admin_r, archive)
        lost = {o for o in confirmed if records.get(o, ["none"])[0] != "confirmed"}
        assert not lost, f"{len(lost)} of {len(confirmed)} confirmed orders are not: {lost}"
        flipped = {o: s for o, s in records.items() if s[0] == "confirmed" and "rejected" in s}
        assert not flipped, f"archived as confirmed, later as rejected: {flipped}"
        report = verify(admin_r, Keys(NS), COUNTS)
        assert report.ok
        cli_process("verify", env=admin_env)
        cli_process("verify", "--archive", str(archive), env=admin_env)
        assert not reload_errors(tmp_path / "redis")
        admin_r.close()
        producer_r.close()
    finally:
        server.close()


def test_a_cluster_master_restarted_as_shipped_keeps_every_effect(
    tmp_path: Path, fleet_factory: list[LocalFleet]
) -> None:
    """Redis Cluster with the shipped flags and ACL (plus the cluster rights SECURITY.md
    lists): each master SIGKILLed and restarted under load; nothing lost or doubled."""
    cluster = LocalCluster(workdir=tmp_path / "cluster", node_timeout_ms=1000, shipped=True)
    cluster.start()
    assert cluster.logins is not None
    logins = cluster.logins
    try:
        url = cluster.url
        admin_env = env_of(url, logins, "admin")
        cli_process("init", "--user-shards", "4", "--item-shards", "4", env=admin_env)
        fleet = LocalFleet(url, NS, tmp_path / "workers", env={
            **logins.env("worker"), "EVENTFLEET_LEASE_TTL_MS": "1500",
        })  # fmt: skip
        fleet_factory.append(fleet)
        fleet.start()
        fleet.start()
        from eventfleet.store.connection import connect
        from eventfleet.store.settings import Settings

        def settings(role: str) -> Settings:
            return Settings(
                redis_url=url,
                redis_username=logins.user(role),
                redis_password_file=logins.password_file(role),
            )

        producer_r = connect(settings("producer"), timeout=10)
        load = PacedProducer(producer_r, Keys(NS), COUNTS, mixed(6000, seed=3), rate=600)
        load.start()
        try:
            for node in list(cluster.master_nodes()):
                wait_for(lambda: load.published > 0, 60, "events published")
                before = load.published
                cluster.kill(node)
                cluster.restart(node, timeout=60)

                def again(b: int = before) -> bool:
                    return load.published > b + 200 or not load.is_alive()

                wait_for(again, 120, "publishing again")
        finally:
            load.join(timeout=120)
        assert load.error is None, load.error
        admin_r = connect(settings("admin"), timeout=10)
        wait_for(lambda: is_idle(admin_r, Keys(NS), COUNTS), 180, "the fleet to become idle")
        report = verify(admin_r, Keys(NS), COUNTS)
        assert report.ok
        cli_process("verify", env=admin_env)
        assert not reload_errors(tmp_path / "cluster")
        admin_r.close()
        producer_r.close()
    finally:
        cluster.close()
