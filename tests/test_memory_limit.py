"""A Redis at ``maxmemory`` (``noeviction``): workers and producers get one clear log line,
retry, and once memory is there again every event has been applied exactly once."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import redis

from eventfleet.chaos.paced import PacedProducer
from eventfleet.local.fleet import LocalFleet
from eventfleet.local.redisserver import LocalRedis
from eventfleet.ops.status import is_idle
from eventfleet.producer.client import Producer
from eventfleet.producer.workload import mixed
from eventfleet.store.keys import Keys
from tests.fleet_utils import log_lines, make_fleet, setup_namespace
from tests.helpers import wait_for
from tests.recompute import check_against_logs


def _oom_refusals(r: redis.Redis) -> int:
    stats: Any = r.info("errorstats")
    return int(stats.get("errorstat_OOM", {}).get("count", 0))


def test_a_full_redis_is_retried_and_nothing_is_lost_or_applied_twice(
    own_redis: LocalRedis, tmp_path: Path, fleet_factory: list[LocalFleet]
) -> None:
    r = redis.Redis.from_url(own_redis.url)
    ns = "oom"
    keys = Keys(ns)
    counts = setup_namespace(r, ns, 2, 2)
    # retention off: memory only grows, so Redis stays full until the limit is raised
    fleet = make_fleet(own_redis.url, ns, tmp_path, fleet_factory, EVENTFLEET_RETAIN_S="off")
    workers = [fleet.start(), fleet.start()]
    events = list(mixed(6000, seed=9, users=100, items=20))
    Producer(r, keys, counts).publish(events[:1500])
    wait_for(lambda: is_idle(r, keys, counts), 90, "the first events to be applied")

    # work waiting for the workers, whose effects then need memory Redis no longer has
    for w in workers:
        fleet.pause(w)
    Producer(r, keys, counts).publish(events[1500:3000])
    used = int(r.info("memory")["used_memory"])
    r.config_set("maxmemory-policy", "noeviction")
    r.config_set("maxmemory", used + 32 * 1024)
    for w in workers:
        fleet.resume(w)
    producer = PacedProducer(r, keys, counts, events[3000:], rate=4000, chunk=100)
    producer.start()
    wait_for(lambda: _oom_refusals(r) > 50, 120, "Redis to refuse writes (OOM)")
    wait_for(
        lambda: any(
            any(e["event"] == "redis_out_of_memory" for e in log_lines(w)) for w in workers
        ),
        90,
        "a worker to say that Redis is full",
    )
    r.config_set("maxmemory", 0)
    producer.join(timeout=180)
    assert producer.error is None and producer.published == len(events) - 3000
    wait_for(lambda: is_idle(r, keys, counts), 120, "the fleet to catch up")

    check_against_logs(r, ns, events)
    for w in workers:
        lines = log_lines(w)
        said = [e for e in lines if e["event"] == "redis_out_of_memory"]
        assert len(said) <= 3, len(said)  # once per episode, not once per retry
        assert all("maxmemory" in e["error"] for e in said)
        assert not any(e.get("exception") for e in lines)
        assert w.alive
    assert "Traceback" not in "".join(w.log_path.read_text() for w in workers)
