"""Metrics of recovery and backlog on live workers: a takeover after SIGKILL counts the
claimed and replayed entries (as `status --json` predicts), a crash-looping entry becomes a
dead letter, and the lag and pending gauges follow the fleet's consumer group."""

from __future__ import annotations

import itertools
import time
from pathlib import Path

import redis

from eventfleet.local.fleet import LocalFleet
from eventfleet.local.redisserver import LocalRedis
from ledger.events import Topup
from ledger.shards import user_shard
from ledger.state import ShardState
from producer.client import Producer
from producer.workload import mixed
from store.keys import GROUP, Keys
from tests.fleet_utils import make_fleet, plant_crash_looping_entry, setup_namespace
from tests.helpers import cli_json, wait_for
from tests.live_worker import (
    Scrape,
    count_range,
    gauge_by_shard,
    pending_by_consumer,
    start,
    until,
    wait_idle,
    wait_ready,
)
from worker.ownership import LAG_SAMPLE_S


def test_takeover_after_a_sigkill_counts_claimed_and_replayed_entries(
    r: redis.Redis,
    redis_server: LocalRedis,
    namespace: str,
    env: dict[str, str],
    tmp_path: Path,
    fleet_factory: list[LocalFleet],
) -> None:
    counts = setup_namespace(r, namespace)
    keys = Keys(namespace)
    fleet = make_fleet(redis_server.url, namespace, tmp_path, fleet_factory)
    a = start(fleet)
    wait_ready(a)
    producer = Producer(r, keys, counts)
    events = mixed(1_000_000, seed=41)

    def stopped_mid_batch() -> int:
        """Publish a chunk and pause the worker: kill it if it holds entries read but not
        acked, else resume it for another round."""
        producer.publish(itertools.islice(events, 500))
        fleet.pause(a.proc)
        held = pending_by_consumer(r, keys, counts, a.id)
        if held:
            fleet.kill(a.proc)
        else:
            fleet.resume(a.proc)
        return held

    claimed = wait_for(stopped_mid_batch, 60, "the worker to be caught between read and ack")
    # What a new owner must do, from Redis alone: replay (snapshot, last delivered], claim
    # the dead worker's pending entries.
    to_replay: dict[str, int] = {}
    replay: dict[str, int] = {}
    for s in counts.all_shards():
        snap = r.get(keys.snapshot(s))
        snap_id = "0-0" if snap is None else ShardState.from_snapshot(snap, s).last_id
        delivered = next(
            g["last-delivered-id"].decode()
            for g in r.xinfo_groups(keys.events(s))
            if g["name"] == GROUP.encode()
        )
        replay[s] = count_range(r, keys.events(s), snap_id, delivered)
        to_replay[s] = count_range(r, keys.events(s), snap_id)
    assert sum(replay.values()) >= claimed > 0

    # `status --json` gives the same recovery estimate and shows the claimable entries.
    doc = cli_json("status", "--json", env=env)
    assert {row["shard"]: row["to_replay"] for row in doc["shards"]} == to_replay
    assert doc["totals"]["pending"] == claimed

    b = start(fleet)
    wait_ready(b)

    def recovered() -> Scrape | None:
        m = b.scrape()
        return m if m.total("eventfleet_recovery_duration_seconds_count") == 8 else None

    m = until(recovered, 30, "the new worker to take over every shard")
    assert m.total("eventfleet_claimed_entries_total") == claimed
    assert m.nonzero("eventfleet_replayed_entries_total", "shard") == {
        s: n for s, n in replay.items() if n
    }
    assert m.total("eventfleet_lease_acquisitions_total") == 8
    logged = {e["shard"]: e["replayed"] for e in b.events("lease_acquired")}
    assert logged == replay
    assert sum(e["claimed"] for e in b.events("lease_acquired")) == claimed
    wait_idle(r, namespace, counts)


def test_an_entry_delivered_too_often_counts_as_a_dead_letter_on_takeover(
    r: redis.Redis,
    redis_server: LocalRedis,
    namespace: str,
    tmp_path: Path,
    fleet_factory: list[LocalFleet],
) -> None:
    counts = setup_namespace(r, namespace)
    keys = Keys(namespace)
    shard, eid = plant_crash_looping_entry(r, keys, counts)
    fleet = make_fleet(redis_server.url, namespace, tmp_path, fleet_factory)
    a = start(fleet)
    wait_ready(a)
    wait_idle(r, namespace, counts)
    m = a.scrape()
    dead = [(s.labels, s.value) for s in m.samples("eventfleet_dead_letters_total") if s.value]
    assert dead == [({"shard": shard, "reason": "max_deliveries"}, 1.0)]
    assert m.nonzero("eventfleet_claimed_entries_total", "shard") == {shard: 1}
    assert m.nonzero("eventfleet_replayed_entries_total", "shard") == {shard: 1}
    assert m.total("eventfleet_events_applied_total") == 0
    [line] = a.events("dead_letter")
    assert (line["shard"], line["entry_id"], line["reason"]) == (shard, eid, "max_deliveries")
    assert line["epoch"] == 1 and line["worker_id"] == a.id


def test_lag_and_pending_gauges_follow_the_workers_group(
    r: redis.Redis,
    redis_server: LocalRedis,
    namespace: str,
    tmp_path: Path,
    fleet_factory: list[LocalFleet],
) -> None:
    counts = setup_namespace(r, namespace)
    keys = Keys(namespace)
    shard = user_shard(1, counts)
    stream = keys.events(shard)
    # Another reader's group on the same stream must not be mistaken for the fleet's.
    r.xgroup_create(stream, "zz-audit", id="0")
    fleet = make_fleet(
        redis_server.url,
        namespace,
        tmp_path,
        fleet_factory,
        EVENTFLEET_LEASE_TTL_MS="5000",
        EVENTFLEET_BATCH_SIZE="100",
    )
    Producer(r, keys, counts).publish([Topup(user_id=1, amount=1)] * 50)
    a = start(fleet)
    wait_ready(a)
    wait_idle(r, namespace, counts)
    wait_for(
        lambda: gauge_by_shard(a, "eventfleet_shard_lag").get(shard) == 0,
        10,
        "the lag of the fleet's group (not the audit group's 50) to be sampled",
    )

    burst = 300
    fleet.pause(a.proc)
    Producer(r, keys, counts).publish([Topup(user_id=1, amount=1)] * burst)
    # An operator's stray read leaves three entries pending under another consumer.
    r.xreadgroup(GROUP, "inspector", {stream: ">"}, count=3)
    # The fault: a pause longer than the sampling period, shorter than the lease TTL. On
    # resuming, the worker samples before it can have read more than one batch.
    time.sleep(LAG_SAMPLE_S + 0.5)
    fleet.resume(a.proc)

    def backlog() -> tuple[float, float] | None:
        m = a.scrape()
        lag = m.total("eventfleet_shard_lag", shard=shard)
        pending = m.total("eventfleet_shard_pending", shard=shard)
        return (lag, pending) if lag > 0 else None

    lag, pending = until(backlog, 10, "the backlog to show in the lag gauge")
    assert burst - 3 - 100 <= lag <= burst - 3
    assert pending == 3
    wait_for(
        lambda: gauge_by_shard(a, "eventfleet_shard_lag").get(shard) == 0,
        10,
        "the lag to fall back to 0",
    )
    assert gauge_by_shard(a, "eventfleet_shard_pending")[shard] == 3
    stray = r.xpending_range(stream, GROUP, min="-", max="+", count=10)
    r.xack(stream, GROUP, *[p["message_id"] for p in stray])
    wait_for(
        lambda: gauge_by_shard(a, "eventfleet_shard_pending").get(shard) == 0,
        10,
        "the pending gauge to follow the ack",
    )
