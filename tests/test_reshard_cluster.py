"""Online resharding on Redis Cluster as shipped (docs/DESIGN-DECISIONS.md, section 35): a
3-master cluster with the shipped flags and ACL file (plus the cluster rights SECURITY.md
lists), worker processes logged in as ``eventfleet-worker``, two producers as
``eventfleet-producer`` (one that never re-reads the counts, one that learns them) and
``eventfleet reshard --user-shards 8 --item-shards 4`` run as ``eventfleet-admin`` on a live
2+2 namespace. The keys of one run are in different slots, hence on different masters: the
lease and meta script (the lease tagged with the meta key's name), a parent's batch and the
``forward_once.lua`` call in its child's slot queued with it, the seeds, the workers' reads of
the new shards. Every order is decided once, every balance and stock once on the shard the
grown counts give it, no dead letter, no event forwarded twice, ``verify`` clean."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from eventfleet.ledger.events import AddItem
from eventfleet.ledger.shards import ShardCounts
from eventfleet.local.cluster import LocalCluster
from eventfleet.local.fleet import LocalFleet
from eventfleet.local.redisserver import RedisNotInstalled
from eventfleet.local.shipped import Logins
from eventfleet.ops.status import is_idle
from eventfleet.producer.client import Producer
from eventfleet.store.connection import connect
from eventfleet.store.keys import Keys
from eventfleet.store.settings import Settings
from tests.fleet_utils import FAST
from tests.helpers import cli_process, wait_for
from tests.test_reshard_grow import ITEMS, Publishing, settled
from tests.test_restart_shipped import NS, env_of

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


def test_a_live_namespace_grows_on_a_shipped_cluster_and_verify_is_clean(
    shipped_cluster: LocalCluster, tmp_path: Path, fleet_factory: list[LocalFleet]
) -> None:
    c = shipped_cluster
    assert c.logins is not None
    logins, url = c.logins, c.url
    admin_env = env_of(url, logins, "admin")
    cli_process("init", "--user-shards", "2", "--item-shards", "2", env=admin_env)
    admin, producer = login(url, logins, "admin"), login(url, logins, "producer")
    try:
        grown = GROWN.all_shards()
        parents = {s: f"{s[0]}{int(s[1:]) % 2}" for s in grown if s not in INIT.all_shards()}
        apart = [s for s, p in parents.items() if c.master_of(KEYS.events(s)).port
                 != c.master_of(KEYS.events(p)).port]  # fmt: skip
        assert apart, "some child should be on another master than its parent"
        Producer(producer, KEYS, INIT).publish(
            [AddItem(item_id=i, count=10**6, price=1) for i in ITEMS]
        )
        fleet = LocalFleet(url, NS, tmp_path / "workers", env={**FAST, **logins.env("worker")})
        fleet_factory.append(fleet)
        fleet.start(), fleet.start()
        wait_for(lambda: owned(admin, INIT), 60, "every shard owned")
        with Publishing(producer, KEYS, INIT, pace_s=0.05) as pub:
            wait_for(lambda: pub.rounds >= 2, 60, "the producers publishing")
            done = cli_process(
                "reshard", "--user-shards", "8", "--item-shards", "4", "--json",
                env=admin_env, timeout=180,
            )  # fmt: skip
            got = json.loads(done.stdout)
            assert (got["from"], got["target"], got["state"]) == ("2,2", "8,4", "done"), got
            assert sorted(got["markers_appended"]) == sorted(INIT.all_shards()), got
            wait_for(lambda: pub.learner.counts.users == 8, 60, "a producer learning 8")
            at = pub.rounds
            wait_for(lambda: pub.rounds >= at + 2, 60, "rounds published after the growth")
        try:
            wait_for(lambda: is_idle(admin, KEYS, GROWN), 120, "the fleet to become idle")
        except AssertionError:
            shown = cli_process("status", env=admin_env, check=False)
            raise AssertionError(f"not idle:\n{shown.stdout}{shown.stderr}") from None
        assert all(w.alive for w in fleet.workers)
        settled(admin, KEYS, pub, GROWN)
        for child in apart:  # the forwards crossed masters
            assert any(f.get(b"fwd") for _i, f in admin.xrange(KEYS.events(child))), child
        assert owned(admin, GROWN)
        report = json.loads(cli_process("verify", "--json", env=admin_env).stdout)
        assert report["ok"] and report["quiescent"], report["findings"]
        status = json.loads(cli_process("status", "--json", env=admin_env).stdout)
        assert status["reshard"]["state"] == "done" and status["totals"]["shards"] == 12
    finally:
        admin.close()
        producer.close()
