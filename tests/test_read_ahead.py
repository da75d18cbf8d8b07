"""The worker's read-ahead: when a read comes back full, the next read is sent before the batch
is applied. Exactly once must hold when ownership changes while a read-ahead is in flight
(a join hands shards over, a SIGKILL leaves delivered entries pending).

A batch size of 10 keeps every read of the backlog full, so nearly every poll reads ahead.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import redis

from eventfleet.local.fleet import LocalFleet
from eventfleet.local.redisserver import LocalRedis
from eventfleet.ops.status import is_idle
from eventfleet.producer.client import Producer
from eventfleet.producer.workload import mixed
from eventfleet.store import ids
from eventfleet.store.keys import GROUP, Keys
from tests.fleet_utils import log_lines, make_fleet, owners, setup_namespace
from tests.helpers import wait_for
from tests.recompute import check_against_logs


def delivered(r: redis.Redis, keys: Keys, shards: list[str]) -> int:
    pipe = r.pipeline(transaction=False)
    for s in shards:
        pipe.xinfo_groups(keys.events(s))
    groups: list[Any] = pipe.execute()
    return sum(
        int(g.get("entries-read") or 0) for gs in groups for g in gs if ids.text(g["name"]) == GROUP
    )


def test_read_ahead_is_exactly_once_through_a_join_and_a_sigkill(
    r: redis.Redis,
    redis_server: LocalRedis,
    namespace: str,
    tmp_path: Path,
    fleet_factory: list[LocalFleet],
) -> None:
    counts = setup_namespace(r, namespace, 4, 4)
    keys, shards = Keys(namespace), counts.all_shards()
    # large enough that the backlog outlasts the hand-over on a fast fleet (30,000 events
    # were all applied before the kill once the worker's writes were packed by hiredis;
    # 150,000 left about a fifth of the entries for after it, on an idle machine)
    events = list(mixed(150_000, seed=11, users=300, items=40))
    Producer(r, keys, counts).publish(events)  # a backlog: every read comes back full
    backlog = sum(int(r.llen(keys.inbox(s))) - 1 for s in shards)  # entries (bundles)
    fleet = make_fleet(
        redis_server.url, namespace, tmp_path, fleet_factory, EVENTFLEET_BATCH_SIZE="10"
    )
    first = fleet.start()
    wait_for(
        lambda: delivered(r, keys, shards) >= backlog // 10, 60, "a part of the backlog applied"
    )
    second = fleet.start()  # the first hands shards over, read-aheads in flight
    wait_for(
        lambda: second.worker_id in owners(r, namespace, counts).values(),
        30,
        "the second worker to own shards",
    )
    at_kill = delivered(r, keys, shards)
    fleet.kill(first)  # its last read-ahead's entries stay pending for the next owner
    fleet.start()
    wait_for(lambda: is_idle(r, keys, counts), 120, "the fleet to become idle")
    assert any(e["event"] == "handed_over" for e in log_lines(first)), "no hand-over happened"
    assert at_kill < delivered(r, keys, shards), "the backlog was gone before the kill"
    check_against_logs(r, namespace, events)
