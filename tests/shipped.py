"""Tests against Redis as we ship it (``LocalRedis(shipped=True)``: the compose file's flags,
the shipped ACL file, its users): logins per role and a namespace set up as `init` does."""

from __future__ import annotations

import redis

from eventfleet.ledger.shards import ShardCounts
from eventfleet.local.redisserver import LocalRedis
from eventfleet.store.keys import Keys
from eventfleet.store.namespace import init_namespace
from eventfleet.store.reload_safety import guard_init, record


def login(server: LocalRedis, role: str) -> redis.Redis:
    """A client logged in as ``role`` (admin, worker, producer, exporter, or root: the local
    superuser that only the test's own set-up and checks use)."""
    assert server.logins is not None, "not a shipped LocalRedis"
    return redis.Redis(
        host="127.0.0.1",
        port=server.port,
        username=server.logins.user(role),
        password=server.logins.password(role),
    )


def init_shipped(server: LocalRedis, ns: str, users: int = 4, items: int = 4) -> ShardCounts:
    """What `eventfleet init` does as the admin user: check that Redis keeps transactions on
    reload, create the namespace, record the check (workers refuse to start without it)."""
    admin = login(server, "admin")
    try:
        checked = guard_init(admin, Keys(ns))
        counts = ShardCounts(users, items)
        init_namespace(admin, Keys(ns), counts)
        record(admin, Keys(ns), checked)
        return counts
    finally:
        admin.close()
