"""A worker started before `eventfleet init` waits for the namespace (bounded by
EVENTFLEET_NAMESPACE_WAIT_S, a log line every few seconds) instead of crash-looping."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import redis

from eventfleet.ledger.shards import ShardCounts
from eventfleet.local.fleet import LocalFleet
from eventfleet.local.redisserver import LocalRedis
from eventfleet.store.keys import Keys
from tests.fleet_utils import log_lines, make_fleet, owners
from tests.helpers import cli, wait_for


def test_a_worker_waits_for_init_then_takes_its_shards(
    r: redis.Redis,
    redis_server: LocalRedis,
    namespace: str,
    tmp_path: Path,
    fleet_factory: list[LocalFleet],
) -> None:
    fleet = make_fleet(
        redis_server.url, namespace, tmp_path, fleet_factory, EVENTFLEET_NAMESPACE_WAIT_S="300"
    )
    w = fleet.start()
    wait_for(
        lambda: any(e["event"] == "waiting_for_namespace" for e in log_lines(w)),
        60,
        "the worker to say it waits for the namespace",
    )
    assert w.alive
    env = {"REDIS_URL": redis_server.url, "EVENTFLEET_NAMESPACE": namespace}
    cli("init", "--user-shards", "2", "--item-shards", "2", env=env)
    counts = ShardCounts(2, 2)
    wait_for(
        lambda: set(owners(r, namespace, counts).values()) == {w.worker_id},
        60,
        "the waiting worker to take every shard",
    )
    waits = [e for e in log_lines(w) if e["event"] == "waiting_for_namespace"]
    assert waits[0]["namespace"] == namespace and "eventfleet init" in waits[0]["hint"]
    assert r.exists(Keys(namespace).meta)


def test_the_wait_is_bounded_and_ends_in_one_error_line(
    redis_server: LocalRedis, namespace: str
) -> None:
    env = {
        **os.environ,
        "REDIS_URL": redis_server.url,
        "EVENTFLEET_NAMESPACE": namespace,
        "EVENTFLEET_NAMESPACE_WAIT_S": "0",
        "EVENTFLEET_METRICS_PORT": "0",
        "EVENTFLEET_LOG_FORMAT": "json",
    }
    res = subprocess.run(
        [sys.executable, "-m", "eventfleet.worker"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert res.returncode == 2
    lines = [json.loads(x) for x in (res.stdout + res.stderr).splitlines() if x.startswith("{")]
    fatal = [e for e in lines if e["event"] == "fatal"]
    assert len(fatal) == 1 and "EVENTFLEET_NAMESPACE_WAIT_S" in fatal[0]["error"], lines
