"""Fixtures: a real redis-server per test session on a free port in a temp dir (never the
machine's 6379), flushed per test; a private one for tests that stop or kill Redis; a
redis-server per module with the shipped ACL file (tests/secure_redis.py) for the ACL tests.
Each test's tier (fast, redis, fleet, chaos) and timeout: tests/tiers.py."""

from __future__ import annotations

import gc
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from eventfleet.local.fleet import LocalFleet
from eventfleet.local.redisserver import LocalRedis, RedisNotInstalled
from tests.kube_api import KubeApi, start_kube_api
from tests.secure_redis import (
    EVENTS,
    GROUP,
    INBOX,
    ITEM_INBOX,
    META,
    SCRIPT,
    SCRIPT_SHA,
    SNAPSHOT,
    Server,
    acl_copy,
    connect,
    start_redis,
)
from tests.tiers import (  # noqa: F401  (pytest's hooks for the tiers, found here by name)
    pytest_addoption,
    pytest_collection_finish,
    pytest_collection_modifyitems,
    pytest_runtest_protocol,
)


def _start() -> LocalRedis:
    try:
        return LocalRedis().start()
    except RedisNotInstalled as exc:  # fail loudly, never skip
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture(scope="session", autouse=True)
def _collect_cycles_quietly() -> Iterator[None]:
    """At the end of the session, collect reference cycles with ``ResourceWarning`` ignored.
    A client caught in a cycle (a thread's or a task's closure holding it) is freed only by
    the collector, whenever it runs: its socket's warning then lands on whichever test runs at
    that moment, or fails the whole session at pytest's final collection, in one run of
    several. A leak inside a test still warns there (the warnings filter makes it an error)."""
    yield
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[LocalRedis]:
    server = _start()
    yield server
    server.close()


@pytest.fixture
def own_redis() -> Iterator[LocalRedis]:
    """A redis-server of this test alone (for tests that stop, restart or kill it)."""
    server = _start()
    yield server
    server.close()


@pytest.fixture
def r(redis_server: LocalRedis) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    yield client
    client.close()


@pytest.fixture
def namespace() -> str:
    return f"t{uuid.uuid4().hex[:8]}"


@pytest.fixture
def env(redis_server: LocalRedis, namespace: str) -> dict[str, str]:
    """Environment for CLI calls and workers against the session Redis."""
    return {
        "REDIS_URL": redis_server.url,
        "EVENTFLEET_NAMESPACE": namespace,
        "EVENTFLEET_LOG_FORMAT": "json",
    }


@pytest.fixture
def fleet_factory(tmp_path: Path) -> Iterator[list[LocalFleet]]:
    """Fleets created through this list are stopped (SIGCONT, SIGTERM, SIGKILL) after the test."""
    fleets: list[LocalFleet] = []
    yield fleets
    for f in fleets:
        f.stop_all(timeout=15)


@pytest.fixture
def kube_api(tmp_path: Path) -> Iterator[KubeApi]:
    """A TLS stand-in for the Kubernetes API's StatefulSet scale reads (tests/kube_api.py)."""
    api = start_kube_api(tmp_path / "kube", "eventfleet")
    yield api
    api.stop()


# ---------------------------------------------------------------- the shipped ACL file


@pytest.fixture(scope="module")
def acl_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    workdir = tmp_path_factory.mktemp("redis-acl")
    aclfile = acl_copy(workdir)
    server = start_redis(workdir, lambda port: ["--port", str(port), "--aclfile", str(aclfile)])
    yield server
    server.stop()


@pytest.fixture
def port(acl_server: Server) -> Iterator[int]:
    root = connect(acl_server.port, "root")
    root.flushall()
    root.script_flush()
    yield acl_server.port
    root.close()


@pytest.fixture
def seeded(port: int) -> dict[str, str]:
    """Namespace data as `init` and a producer would leave it; returns placeholders' values."""
    root = connect(port, "root")
    root.hset(META, mapping={"user_shards": 1, "item_shards": 8, "version": 1})
    root.xgroup_create(EVENTS, GROUP, id="0", mkstream=True)
    entry = root.xadd(EVENTS, {"event": "{}"})
    root.xadd(EVENTS, {"event": "{}"})
    root.xreadgroup(GROUP, "w-old", {EVENTS: ">"}, count=1)  # one pending entry
    root.set(SNAPSHOT, "{}")
    for inbox in (INBOX, ITEM_INBOX, "eventfleet:{u123}:inbox", "eventfleet:{i1234}:inbox"):
        root.rpush(inbox, "head")
    root.script_load(SCRIPT)
    root.close()
    return {"$ID": str(entry), "$SHA": SCRIPT_SHA}
