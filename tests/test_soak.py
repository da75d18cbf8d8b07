"""Soak with retention on: a steady rate, a short window, `eventfleet archive` running along.
Redis memory levels off once the window has passed, and `verify --archive` still recomputes
every record from the first event. A CI-sized run in the default suite; a long one behind
``-m chaos``."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
import redis

from eventfleet.chaos.paced import PacedProducer
from eventfleet.ledger.events import AddItem, Order, Topup
from eventfleet.local.fleet import LocalFleet
from eventfleet.local.redisserver import LocalRedis
from eventfleet.ops.archive import Archive, archive
from eventfleet.ops.archive.writer import stream_key, streams_of
from eventfleet.ops.status import is_idle
from eventfleet.ops.verify import verify
from eventfleet.producer.workload import mixed
from eventfleet.store.keys import Keys
from tests.fleet_utils import make_fleet, setup_namespace
from tests.helpers import wait_for


def _stream_bytes(r: redis.Redis, keys: Keys, shards: list[str]) -> int:
    """What the shard streams take in Redis (MEMORY USAGE, every node sampled)."""
    pipe = r.pipeline(transaction=False)
    for s in shards:
        for stream in streams_of(s):
            pipe.memory_usage(stream_key(keys, s, stream), samples=0)
    return sum(int(n or 0) for n in pipe.execute())


def _added(r: redis.Redis, keys: Keys, shards: list[str]) -> int:
    total = 0
    for s in shards:
        info: Any = r.xinfo_stream(keys.events(s))
        total += int(info["entries-added"])
    return total


def soak(
    url: str, ns: str, tmp: Path, fleets: list[LocalFleet], n_events: int, rate: float
) -> None:
    r = redis.Redis.from_url(url)
    keys = Keys(ns)
    counts = setup_namespace(r, ns, 4, 4)
    shards = counts.all_shards()
    fleet = make_fleet(
        url,
        ns,
        tmp,
        fleets,
        EVENTFLEET_RETAIN_S="2",
        EVENTFLEET_SNAPSHOT_INTERVAL_S="0.5",
        EVENTFLEET_ARCHIVE_REQUIRED="1",
    )
    fleet.start()
    fleet.start()
    events = list(mixed(n_events, seed=21, users=300, items=30))
    root = tmp / "archive"
    stop = threading.Event()
    errors: list[str] = []

    def archiver() -> None:
        client = redis.Redis.from_url(url)
        while not stop.wait(0.5):
            try:
                archive(client, keys, counts, root, segment_entries=5000)
            except Exception as exc:  # reported below
                errors.append(repr(exc))
                return

    producer = PacedProducer(r, keys, counts, events, rate=rate, chunk=100)
    thread = threading.Thread(target=archiver, daemon=True)
    thread.start()
    producer.start()
    # samples at a third and at the end of the publishing, both well past the window
    third = n_events // 3
    wait_for(lambda: producer.published >= third, 600, "a third of the events")
    mid_bytes, mid_added = _stream_bytes(r, keys, shards), _added(r, keys, shards)
    producer.join(timeout=900)
    end_bytes, end_added = _stream_bytes(r, keys, shards), _added(r, keys, shards)
    stop.set()
    thread.join(timeout=120)
    assert not errors, errors
    assert producer.error is None and producer.published == n_events
    assert end_added >= 2 * mid_added  # twice the history went through Redis meanwhile ...
    assert end_bytes < 1.5 * mid_bytes + 256 * 1024, (mid_bytes, end_bytes)  # ... not its size

    wait_for(lambda: is_idle(r, keys, counts), 120, "the fleet to become idle")
    archive(r, keys, counts, root, segment_entries=5000)
    report = verify(r, keys, counts, archive=Archive(root, ns, counts))
    assert report.ok, report.as_json()["findings"]
    assert report.unchecked == [], report.unchecked
    assert all(f.complete for f in report.folds.values())
    t = report.totals
    assert t["topups"] == sum(e.amount for e in events if isinstance(e, Topup))
    assert t["added"] == sum(e.count for e in events if isinstance(e, AddItem))
    assert t["orders"] == sum(1 for e in events if isinstance(e, Order))
    assert sum(t["outcomes"].values()) == t["orders"]


def test_soak_memory_levels_off_and_verify_archive_sees_everything(
    redis_server: LocalRedis, namespace: str, tmp_path: Path, fleet_factory: list[LocalFleet]
) -> None:
    soak(redis_server.url, namespace, tmp_path, fleet_factory, n_events=15_000, rate=1000)


@pytest.mark.chaos
def test_long_soak_memory_levels_off_and_verify_archive_sees_everything(
    redis_server: LocalRedis, namespace: str, tmp_path: Path, fleet_factory: list[LocalFleet]
) -> None:
    soak(redis_server.url, namespace, tmp_path, fleet_factory, n_events=300_000, rate=2000)
