"""Fixtures: a real redis-server per test session on a free port in a temp dir (never the
machine's 6379), flushed per test; a private one for tests that stop or kill Redis."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from eventfleet.local.fleet import LocalFleet
from eventfleet.local.redisserver import LocalRedis, RedisNotInstalled


def _start() -> LocalRedis:
    try:
        return LocalRedis().start()
    except RedisNotInstalled as exc:  # fail loudly, never skip
        pytest.fail(str(exc), pytrace=False)


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
