"""Shared pieces of the worker tests: a namespace with a fleet, reading worker logs, lease
owners (the paced producer thread is eventfleet.chaos.paced.PacedProducer)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import redis

from eventfleet.ledger.events import AddItem, Order, Topup
from eventfleet.ledger.shards import ShardCounts
from eventfleet.local.fleet import LocalFleet, WorkerProc
from eventfleet.store.keys import Keys
from eventfleet.store.namespace import init_namespace

FAST = {
    "EVENTFLEET_LEASE_TTL_MS": "1500",
    "EVENTFLEET_SNAPSHOT_INTERVAL_S": "1",
    "EVENTFLEET_BLOCK_MS": "50",
    "EVENTFLEET_DRAIN_TIMEOUT_S": "10",
}


def setup_namespace(r: redis.Redis, ns: str, users: int = 4, items: int = 4) -> ShardCounts:
    counts = ShardCounts(users, items)
    init_namespace(r, Keys(ns), counts)
    return counts


def make_fleet(url: str, ns: str, tmp: Path, fleets: list[LocalFleet], **env: str) -> LocalFleet:
    fleet = LocalFleet(url, ns, tmp / "logs", env={**FAST, **env})
    fleets.append(fleet)
    return fleet


def log_lines(w: WorkerProc) -> list[dict[str, Any]]:
    out = []
    for line in w.log_path.read_text().splitlines():
        if line.startswith("{"):
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
    return out


def owners(r: redis.Redis, ns: str, counts: ShardCounts) -> dict[str, str | None]:
    keys = Keys(ns)
    vals: list[Any] = list(r.mget([keys.lease(s) for s in counts.all_shards()]))
    return {
        s: (v.decode().rpartition(":")[0] if v else None)
        for s, v in zip(counts.all_shards(), vals, strict=True)
    }


def delivered_total(r: redis.Redis, ns: str, counts: ShardCounts) -> int:
    """How many entries the group has delivered over all shards (Redis 7 entries-read)."""
    keys = Keys(ns)
    total = 0
    for s in counts.all_shards():
        for g in r.xinfo_groups(keys.events(s)):
            total += int(g.get("entries-read") or 0)
    return total


def plant_crash_looping_entry(r: redis.Redis, keys: Keys, counts: ShardCounts) -> tuple[str, str]:
    """A top-up whose earlier owners crashed on it again and again: delivered to a consumer
    that is gone, never acked, its delivery count far past max_deliveries. Returns
    (shard, entry id)."""
    from eventfleet.ledger.codec import encode
    from eventfleet.ledger.shards import destination
    from eventfleet.store.keys import EVENT_FIELD, GROUP

    poison = Topup(user_id=12, amount=50)
    shard = destination(poison, counts)
    stream = keys.events(shard)
    eid = r.xadd(stream, {EVENT_FIELD: encode(poison, "p:poison", 1)}).decode()
    r.xreadgroup(GROUP, "crashed-owner", {stream: ">"}, count=1)
    r.xclaim(stream, GROUP, "crashed-owner", 0, [eid], retrycount=40)
    return shard, eid


def append_to_logs(
    r: redis.Redis, keys: Keys, counts: ShardCounts, events: Iterable[Topup | AddItem | Order]
) -> int:
    """Put ``events`` straight into their shards' logs, as the owners' moves out of the
    inboxes leave them (``eventfleet.bench.env.append_to_logs``)."""
    from eventfleet.bench.env import append_to_logs as append

    return append(r, keys, counts, events)
