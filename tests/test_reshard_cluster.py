"""Online resharding on Redis Cluster as shipped (docs/DESIGN-DECISIONS.md, section 35): a
3-master cluster with the shipped flags and ACL file (plus the cluster rights SECURITY.md
lists), worker processes logged in as ``eventfleet-worker``, two producers as
``eventfleet-producer`` (one that never re-reads the counts, one that learns them) and
``eventfleet reshard --user-shards 8 --item-shards 4`` run as ``eventfleet-admin`` on a live
2+2 namespace. The keys of one run are in different slots, hence on different masters: the
lease and meta script (the lease tagged with the meta key's name), a parent's batch and the
``forward_once.lua`` call in its child's slot queued with it, the seeds, the workers' reads of
the new shards. Every order is decided once, every balance and stock once on the shard the
grown counts give it, no dead letter, no event forwarded twice, ``verify`` clean. The same
with retention trimming every log and ``eventfleet archive`` run over and over as the admin:
``verify --archive`` clean from every shard's first entry. And with the master of a parent
SIGKILLed during the run, its replica taking over: the command run again until it finishes,
every event applied once; and with every slot of that master moved to another."""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from eventfleet.ledger.events import AddItem
from eventfleet.ledger.shards import ShardCounts
from eventfleet.ledger.split import marker_text
from eventfleet.local.cluster import LocalCluster
from eventfleet.local.fleet import LocalFleet
from eventfleet.local.redisserver import RedisNotInstalled
from eventfleet.local.shipped import Logins
from eventfleet.ops.status import is_idle
from eventfleet.producer.client import Producer
from eventfleet.store.connection import connect
from eventfleet.store.keys import EVENT_FIELD, Keys
from eventfleet.store.settings import Settings
from tests.fleet_utils import FAST
from tests.helpers import cli_process, wait_for
from tests.test_reshard_grow import ITEMS, Publishing, settled
from tests.test_reshard_retention import TRIMMING, Archiver
from tests.test_restart_shipped import NS, env_of
from tests.test_retention import _settled

KEYS = Keys(NS)
INIT, GROWN = ShardCounts(2, 2), ShardCounts(8, 4)


def login(url: str, logins: Logins, role: str) -> redis.Redis:
    settings = Settings(
        redis_url=url,
        redis_username=logins.user(role),
        redis_password_file=logins.password_file(role),
    )
    return connect(settings, timeout=10)


@pytest.fixture
def shipped_cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    c = LocalCluster(workdir=tmp_path / "cluster", node_timeout_ms=1000, shipped=True)
    try:
        c.start()
    except RedisNotInstalled as exc:  # fail loudly, never skip
        pytest.fail(str(exc), pytrace=False)
    yield c
    c.close()


def owned(r: redis.Redis, counts: ShardCounts) -> bool:
    pipe = r.pipeline(transaction=False)
    for s in counts.all_shards():
        pipe.exists(KEYS.lease(s))
    return all(pipe.execute())


@dataclass
class Shipped:
    """A 2+2 namespace on a shipped cluster, its items stocked, two workers owning it."""

    cluster: LocalCluster
    admin: redis.Redis
    producer: redis.Redis
    admin_env: dict[str, str]
    fleet: LocalFleet


@contextlib.contextmanager
def shipped_fleet(
    c: LocalCluster, tmp_path: Path, fleet_factory: list[LocalFleet], **worker_env: str
) -> Iterator[Shipped]:
    assert c.logins is not None
    logins, url = c.logins, c.url
    admin_env = env_of(url, logins, "admin")
    cli_process("init", "--user-shards", "2", "--item-shards", "2", env=admin_env)
    admin, producer = login(url, logins, "admin"), login(url, logins, "producer")
    try:
        Producer(producer, KEYS, INIT).publish(
            [AddItem(item_id=i, count=10**6, price=1) for i in ITEMS]
        )
        env = {**FAST, **logins.env("worker"), **worker_env}
        fleet = LocalFleet(url, NS, tmp_path / "workers", env=env)
        fleet_factory.append(fleet)
        fleet.start(), fleet.start()
        wait_for(lambda: owned(admin, INIT), 60, "every shard owned")
        yield Shipped(c, admin, producer, admin_env, fleet)
    finally:
        admin.close()
        producer.close()


def grow_under_load(s: Shipped) -> Publishing:
    """``eventfleet reshard`` 2+2 -> 8+4 as the admin while the producers publish, until
    the fleet is idle on the grown counts."""
    with Publishing(s.producer, KEYS, INIT, pace_s=0.05) as pub:
        wait_for(lambda: pub.rounds >= 2, 60, "the producers publishing")
        done = cli_process(
            "reshard", "--user-shards", "8", "--item-shards", "4", "--json",
            env=s.admin_env, timeout=180,
        )  # fmt: skip
        got = json.loads(done.stdout)
        assert (got["from"], got["target"], got["state"]) == ("2,2", "8,4", "done"), got
        assert sorted(got["markers_appended"]) == sorted(INIT.all_shards()), got
        wait_for(lambda: pub.learner.counts.users == 8, 60, "a producer learning 8")
        at = pub.rounds
        wait_for(lambda: pub.rounds >= at + 2, 60, "rounds published after the growth")
    try:
        wait_for(lambda: is_idle(s.admin, KEYS, GROWN), 120, "the fleet to become idle")
    except AssertionError:
        shown = cli_process("status", env=s.admin_env, check=False)
        raise AssertionError(f"not idle:\n{shown.stdout}{shown.stderr}") from None
    assert all(w.alive for w in s.fleet.workers)
    return pub


def test_a_live_namespace_grows_on_a_shipped_cluster_and_verify_is_clean(
    shipped_cluster: LocalCluster, tmp_path: Path, fleet_factory: list[LocalFleet]
) -> None:
    c = shipped_cluster
    parents = {
        s: f"{s[0]}{int(s[1:]) % 2}" for s in GROWN.all_shards() if s not in INIT.all_shards()
    }
    apart = [s for s, p in parents.items() if c.master_of(KEYS.events(s)).port
             != c.master_of(KEYS.events(p)).port]  # fmt: skip
    assert apart, "some child should be on another master than its parent"
    with shipped_fleet(c, tmp_path, fleet_factory) as s:
        pub = grow_under_load(s)
        settled(s.admin, KEYS, pub, GROWN)
        for child in apart:  # the forwards crossed masters
            assert any(f.get(b"fwd") for _i, f in s.admin.xrange(KEYS.events(child))), child
        assert owned(s.admin, GROWN)
        report = json.loads(cli_process("verify", "--json", env=s.admin_env).stdout)
        assert report["ok"] and report["quiescent"], report["findings"]
        status = json.loads(cli_process("status", "--json", env=s.admin_env).stdout)
        assert status["reshard"]["state"] == "done" and status["totals"]["shards"] == 12


def test_a_growth_under_retention_and_the_archive_on_a_shipped_cluster(
    shipped_cluster: LocalCluster, tmp_path: Path, fleet_factory: list[LocalFleet]
) -> None:
    """tests/test_reshard_retention.py's growth on the cluster: every log trimmed to each
    snapshot once ``eventfleet archive``, run over and over as the admin, has it; then
    ``verify --archive`` is clean from every shard's first entry."""
    c, root = shipped_cluster, tmp_path / "archive"
    assert c.logins is not None
    with shipped_fleet(c, tmp_path, fleet_factory, **TRIMMING) as s:
        with Archiver(login(c.url, c.logins, "admin"), KEYS, root) as archiver:
            wait_for(lambda: archiver.runs >= 1, 60, "a first archive")
            pub = grow_under_load(s)
            shards = GROWN.all_shards()
            wait_for(lambda: all(_settled(s.admin, KEYS, x) for x in shards), 90, "the trims")
        assert not archiver.errors, archiver.errors
        marker = marker_text(8, 4).encode()
        for parent in INIT.all_shards():  # each marker is only in the archive now
            assert all(f[EVENT_FIELD] != marker for _i, f in s.admin.xrange(KEYS.events(parent)))
        cli_process("archive", str(root), env=s.admin_env)
        got = cli_process("verify", "--archive", str(root), "--json", env=s.admin_env)
        report = json.loads(got.stdout)
        assert report["ok"] and report["quiescent"], report["findings"]
        assert report["unchecked"] == [], report["unchecked"]
        assert all(x["from"] == "first entry" for x in report["shards"]), report["shards"]
        assert report["totals"]["orders"] == len(pub.orders)


def reshard_until_done(admin_env: dict[str, str], tries: int = 4) -> list[int]:
    """``eventfleet reshard`` 2+2 -> 8+4 run again until it exits 0 (each run continues the
    last: every step is idempotent); the exit codes."""
    codes: list[int] = []
    while not codes or codes[-1]:
        assert len(codes) < tries, f"the reshard did not finish in {tries} runs: {codes}"
        done = cli_process(
            "reshard", "--user-shards", "8", "--item-shards", "4", "--wait", "30",
            env=admin_env, timeout=120, check=False,
        )  # fmt: skip
        assert done.returncode in (0, 1), done.stderr
        codes.append(done.returncode)
    return codes


def grow_through(s: Shipped, fault: Callable[[], None], replicas: int = 0) -> None:
    """The growth under load with ``fault`` done as soon as the run has recorded its target,
    the command run again until it exits 0 (a marker or a meta write lost to the fault is
    written again by the next run); then every event applied once and ``verify`` clean."""
    with Publishing(s.producer, KEYS, INIT, pace_s=0.05) as pub:
        for p in (pub.stale, pub.learner):
            p.wait_replicas = replicas
        wait_for(lambda: pub.rounds >= 2, 60, "the producers publishing")
        codes: list[list[int]] = []
        thread = threading.Thread(
            target=lambda: codes.append(reshard_until_done(s.admin_env)), daemon=True
        )
        thread.start()
        wait_for(lambda: s.admin.hget(KEYS.meta, "reshard_target"), 60, "a run", 0.002)
        fault()
        thread.join(400)
        assert codes and not thread.is_alive(), "the reshard did not finish"
        wait_for(lambda: pub.learner.counts.users == 8, 60, "a producer learning 8")
        at = pub.rounds
        wait_for(lambda: pub.rounds >= at + 2, 60, "rounds published after it")
    wait_for(lambda: is_idle(s.admin, KEYS, GROWN), 120, "the fleet to become idle")
    assert all(w.alive for w in s.fleet.workers)
    settled(s.admin, KEYS, pub, GROWN)
    report = json.loads(cli_process("verify", "--json", env=s.admin_env).stdout)
    assert report["ok"] and report["quiescent"], (codes, report["findings"])


def test_a_growth_goes_on_while_the_master_of_a_parent_fails_over(
    tmp_path: Path, fleet_factory: list[LocalFleet]
) -> None:
    """Three masters with a replica each, as shipped; the producers and the workers WAIT for
    a replica (``EVENTFLEET_WAIT_REPLICAS=1``), so a failover loses nothing acknowledged. The
    master of ``u0`` is SIGKILLed as soon as the run has recorded its target, and comes back
    as its successor's replica. In the runs seen, the first run met the failover and exited 1
    (``cannot reach Redis``), the next continued from what it had recorded and finished."""
    c = LocalCluster(workdir=tmp_path / "cluster", node_timeout_ms=1000, replicas=1, shipped=True)
    try:
        c.start()
    except RedisNotInstalled as exc:
        pytest.fail(str(exc), pytrace=False)

    def failover() -> None:
        victim = c.master_of(KEYS.events("u0"))
        c.kill(victim)
        c.wait_ok(60)
        c.restart(victim)
        c.wait_ok(60)

    try:
        with shipped_fleet(c, tmp_path, fleet_factory, EVENTFLEET_WAIT_REPLICAS="1") as s:
            grow_through(s, failover, replicas=1)
    finally:
        c.close()


def test_a_growth_goes_on_while_slots_move_between_masters(
    shipped_cluster: LocalCluster, tmp_path: Path, fleet_factory: list[LocalFleet]
) -> None:
    """Every slot of the master of ``u0`` moves to another master (``redis-cli --cluster
    reshard``: the clients see ASK and MOVED) as soon as the run has recorded its target."""
    c = shipped_cluster

    def move() -> None:
        source = c.master_of(KEYS.events("u0"))
        target = next(n for n in c.master_nodes() if n.port != source.port)
        slots = next(i.slots for i in c.topology() if i.port == source.port)
        c.move_slots(source, target, count=slots)
        assert c.master_of(KEYS.events("u0")).port == target.port

    with shipped_fleet(c, tmp_path, fleet_factory) as s:
        grow_through(s, move)
