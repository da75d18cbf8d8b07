"""Retention: the owner trims only what its snapshot covers, past the window and the archive;
takeover, replay and dedup never need a trimmed entry (SIGKILLs while trimming and archiving)."""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path
from typing import Any

import redis

from eventfleet.chaos.paced import PacedProducer
from eventfleet.ledger.events import AddItem, Order, Topup
from eventfleet.ledger.state import ShardState
from eventfleet.local.fleet import LocalFleet
from eventfleet.local.redisserver import LocalRedis
from eventfleet.ops.archive import Archive, archive
from eventfleet.ops.status import is_idle
from eventfleet.ops.verify import verify
from eventfleet.producer.workload import mixed
from eventfleet.store.keys import EVENT_FIELD, Keys
from eventfleet.worker.scripts import Scripts
from tests.fleet_utils import make_fleet, setup_namespace
from tests.helpers import wait_for

TOKEN = "w1:1"


def _retain(
    r: redis.Redis, keys: Keys, shard: str, snap_id: str, taken_ms: int, window_ms: int, need: int
) -> Any:
    k = keys
    return Scripts.register(r).retain(
        r,
        lease=k.lease(shard),
        events=k.events(shard),
        outcomes=k.outcomes(shard),
        dlq=k.dlq(shard),
        snapshot=k.snapshot(shard),
        trim_base=k.trim_base(shard),
        archived=k.archived(shard),
        token=TOKEN,
        snapshot_id=snap_id,
        snapshot_ms=taken_ms,
        window_ms=window_ms,
        wait_for_archive=bool(need),
    )


def test_trim_rules_snapshot_window_archive_fence_and_last_record(r: redis.Redis) -> None:
    keys, shard = Keys("rt"), "u0"
    ev = [r.xadd(keys.events(shard), {EVENT_FIELD: f"e{i}"}).decode() for i in range(10)]
    outs = [r.xadd(keys.outcomes(shard), {"seq": i + 1, "outcome": "x"}).decode() for i in range(3)]
    snap = ShardState(shard, last_id=ev[5]).to_snapshot()
    r.set(keys.snapshot(shard), snap)
    now_ms = int(time.time() * 1000) + 10_000
    r.set(keys.lease(shard), TOKEN)

    r.set(keys.lease(shard), "w2:2")  # not our lease: nothing moves
    assert _retain(r, keys, shard, ev[5], now_ms, 0, 0) == -1
    r.set(keys.lease(shard), TOKEN)
    assert _retain(r, keys, shard, ev[5], now_ms, 3_600_000, 0) == [0, 0, 0]  # inside the window
    assert _retain(r, keys, shard, ev[5], now_ms, 0, 1) == [0, 0, 0]  # archive required, none
    r.hset(keys.archived(shard), mapping={"events": ev[2], "outcomes": outs[0]})
    assert _retain(r, keys, shard, ev[5], now_ms, 0, 1) == [2, 0, 0]  # up to the archive mark
    assert r.xrange(keys.events(shard))[0][0].decode() == ev[2]
    assert r.get(keys.trim_base(shard)) == snap  # the state that covers what went
    r.hdel(keys.archived(shard), "events", "outcomes")
    assert _retain(r, keys, shard, ev[5], now_ms, 0, 0) == [3, 2, 0]  # up to the snapshot
    assert r.xrange(keys.events(shard))[0][0].decode() == ev[5]
    # the last outcome stays: append_once reads its seq
    assert [e.decode() for e, _ in r.xrange(keys.outcomes(shard))] == [outs[-1]]
    assert _retain(r, keys, shard, ev[5], now_ms, 0, 0) == [0, 0, 0]


def _trimmed(r: redis.Redis, keys: Keys, shards: list[str]) -> int:
    total = 0
    for s in shards:
        info: Any = r.xinfo_stream(keys.events(s))
        total += int(info["entries-added"]) - int(info["length"])
    return total


def _half_trimmed(r: redis.Redis, keys: Keys, shards: list[str]) -> bool:
    """More than half of the entries ever added to the logs were trimmed (entries, not
    events: a bundle is one entry)."""
    added = sum(int(r.xinfo_stream(keys.events(s))["entries-added"]) for s in shards)
    return _trimmed(r, keys, shards) > added // 2


def _settled(r: redis.Redis, keys: Keys, shard: str) -> bool:
    """The shard's log starts at its snapshot, and the trim base is at the same entry."""
    snap, base = r.get(keys.snapshot(shard)), r.get(keys.trim_base(shard))
    first: Any = r.xrange(keys.events(shard), count=1)
    if snap is None or base is None or not first:
        return False
    last_id = ShardState.from_snapshot(snap, shard).last_id
    base_id = ShardState.from_snapshot(base, shard).last_id
    return bool(first[0][0].decode() == last_id == base_id)


def test_trimming_and_archiving_during_sigkills_lose_nothing(
    r: redis.Redis,
    redis_server: LocalRedis,
    namespace: str,
    tmp_path: Path,
    fleet_factory: list[LocalFleet],
) -> None:
    keys = Keys(namespace)
    counts = setup_namespace(r, namespace, 4, 4)
    fleet = make_fleet(
        redis_server.url,
        namespace,
        tmp_path,
        fleet_factory,
        EVENTFLEET_RETAIN_S="0",
        EVENTFLEET_SNAPSHOT_INTERVAL_S="0.3",
        EVENTFLEET_ARCHIVE_REQUIRED="1",
    )
    for _ in range(3):
        fleet.start()
    events = list(mixed(8000, seed=11, users=200, items=30))
    producer = PacedProducer(r, keys, counts, events, rate=1500, chunk=100)
    root = tmp_path / "archive"
    stop = threading.Event()
    errors: list[str] = []
    runs = [0]

    def archiver() -> None:
        client = redis.Redis.from_url(redis_server.url)
        while not stop.is_set():
            try:
                archive(client, keys, counts, root, segment_entries=400)
                runs[0] += 1
            except Exception as exc:  # reported below
                errors.append(repr(exc))
                return

    thread = threading.Thread(target=archiver, daemon=True)
    producer.start()
    thread.start()
    rng = random.Random(11)
    kills = 0
    while not producer.done or not is_idle(r, keys, counts):
        time.sleep(1.0)  # the fault schedule: one SIGKILL a second
        fleet.kill(rng.choice(fleet.live()))
        kills += 1
        fleet.start()
        if kills > 40:
            break
    stop.set()
    thread.join(timeout=60)
    assert not errors, errors
    assert producer.error is None and producer.published == len(events)
    wait_for(lambda: is_idle(r, keys, counts), 90, "the fleet to become idle")
    shards = counts.all_shards()
    wait_for(lambda: _half_trimmed(r, keys, shards), 60, "trimming to catch up")
    archive(r, keys, counts, root, segment_entries=400)
    assert kills >= 5 and runs[0] >= 3, (kills, runs)

    report = verify(r, keys, counts, archive=Archive(root, namespace, counts))
    assert report.ok, report.as_json()["findings"]
    assert (report.count("lost"), report.count("duplicate"), report.count("mismatch")) == (0, 0, 0)
    assert report.unchecked == [], report.unchecked
    assert all(f.complete for f in report.folds.values())
    t = report.totals
    assert t["topups"] == sum(e.amount for e in events if isinstance(e, Topup))
    assert t["added"] == sum(e.count for e in events if isinstance(e, AddItem))
    assert t["orders"] == sum(1 for e in events if isinstance(e, Order))
    assert sum(t["outcomes"].values()) == t["orders"]


def test_without_an_archive_verify_starts_from_the_trim_base_and_says_so(
    r: redis.Redis,
    redis_server: LocalRedis,
    namespace: str,
    tmp_path: Path,
    fleet_factory: list[LocalFleet],
) -> None:
    keys = Keys(namespace)
    counts = setup_namespace(r, namespace, 2, 2)
    fleet = make_fleet(
        redis_server.url,
        namespace,
        tmp_path,
        fleet_factory,
        EVENTFLEET_RETAIN_S="0",
        EVENTFLEET_SNAPSHOT_INTERVAL_S="0.3",
    )
    fleet.start()
    events = list(mixed(3000, seed=5, users=50, items=10))
    producer = PacedProducer(r, keys, counts, events, rate=3000, chunk=100)
    producer.start()
    producer.join(timeout=120)
    assert producer.error is None
    wait_for(lambda: is_idle(r, keys, counts), 90, "the fleet to become idle")
    shards = counts.all_shards()
    wait_for(lambda: _half_trimmed(r, keys, shards), 60, "trimming")
    wait_for(lambda: all(_settled(r, keys, s) for s in shards), 60, "the last trims")
    report = verify(r, keys, counts)
    assert report.ok, report.as_json()["findings"]
    assert any("snapshot kept at the last trim" in u for u in report.unchecked), report.unchecked
    assert not any(f.complete for f in report.folds.values())


def test_trimming_archiving_and_verify_archive_on_a_cluster(
    tmp_path: Path, namespace: str, fleet_factory: list[LocalFleet]
) -> None:
    from eventfleet.local.cluster import LocalCluster
    from eventfleet.store.connection import connect
    from eventfleet.store.settings import Settings
    from tests.helpers import cli, cli_json

    cluster = LocalCluster(masters=3, replicas=0, node_timeout_ms=1000).start()
    try:
        rc = connect(Settings(redis_url=cluster.urls[0]), timeout=10.0)
        keys = Keys(namespace)
        counts = setup_namespace(rc, namespace, 4, 4)
        fleet = make_fleet(
            cluster.urls[1],
            namespace,
            tmp_path,
            fleet_factory,
            EVENTFLEET_RETAIN_S="0",
            EVENTFLEET_SNAPSHOT_INTERVAL_S="0.3",
            EVENTFLEET_ARCHIVE_REQUIRED="1",
        )
        fleet.start()
        fleet.start()
        env = {"REDIS_URL": cluster.urls[2], "EVENTFLEET_NAMESPACE": namespace}
        root = str(tmp_path / "archive")
        events = list(mixed(3000, seed=23, users=80, items=12))
        producer = PacedProducer(rc, keys, counts, events, rate=2000, chunk=100)
        producer.start()
        cli("archive", root, env=env)  # while publishing: marks every shard
        producer.join(timeout=120)
        assert producer.error is None
        wait_for(lambda: is_idle(rc, keys, counts), 90, "the fleet to become idle")
        cli("archive", root, env=env)
        shards = counts.all_shards()
        wait_for(lambda: _half_trimmed(rc, keys, shards), 60, "trimming")
        report = cli_json("verify", "--archive", root, "--json", env=env)
        assert report["ok"], report["findings"]
        assert report["unchecked"] == [], report["unchecked"]
        assert all(s["from"] == "first entry" for s in report["shards"])
        assert report["totals"]["orders"] == sum(1 for e in events if isinstance(e, Order))
        rc.close()
    finally:
        for f in fleet_factory:  # before their cluster goes
            f.stop_all(timeout=15)
        cluster.close()
