"""Metrics of recovery and backlog on live workers: a takeover after SIGKILL counts the
claimed and replayed entries (as `status --json` predicts), and a crash-looping entry becomes a
dead letter. (The lag and pending gauges are the exporter's: tests/test_exporter.py.)"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import redis

from eventfleet.ledger.state import ShardState
from eventfleet.local.fleet import LocalFleet
from eventfleet.local.redisserver import LocalRedis
from eventfleet.producer.client import Producer
from eventfleet.producer.workload import mixed
from eventfleet.store.keys import GROUP, Keys
from tests.fleet_utils import make_fleet, plant_crash_looping_entry, setup_namespace
from tests.helpers import cli_json, wait_for
from tests.live_worker import (
    Scrape,
    count_range,
    pending_by_consumer,
    start,
    until,
    wait_idle,
    wait_ready,
)


def connected(r: redis.Redis, worker_id: str) -> bool:
    """Whether Redis still holds a connection the worker named (its own or its liveness one)."""
    clients: Any = r.client_list()
    return any(c.get("name") in (worker_id, f"live:{worker_id}") for c in clients)


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
    # The snapshot path that `status --json` predicts: with a warm standby, the new worker
    # (which sees the dead one's heartbeat for up to a TTL) would start from its own copy.
    fleet = make_fleet(
        redis_server.url, namespace, tmp_path, fleet_factory, EVENTFLEET_STANDBYS="0"
    )
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
            # A read the paused process had sent may still run once Redis gets it: count
            # its pending entries once its connections are gone.
            wait_for(lambda: not connected(r, a.id), 30, "the killed worker's connections to close")
            held = pending_by_consumer(r, keys, counts, a.id)
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
    assert dead == [
        ({"shard": shard, "reason": "max_deliveries", "eventfleet_namespace": namespace}, 1.0)
    ]
    assert m.nonzero("eventfleet_claimed_entries_total", "shard") == {shard: 1}
    assert m.nonzero("eventfleet_replayed_entries_total", "shard") == {shard: 1}
    assert m.total("eventfleet_events_applied_total") == 0
    [line] = a.events("dead_letter")
    assert (line["shard"], line["entry_id"], line["reason"]) == (shard, eid, "max_deliveries")
    assert line["epoch"] == 1 and line["worker_id"] == a.id
