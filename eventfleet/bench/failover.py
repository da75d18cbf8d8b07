"""Failover (figure h): SIGKILL one of four settled workers and time, per shard it held, until
another worker holds the shard's lease and has applied a probe event published right after
the kill (the group delivered past the probe and nothing is pending: applied and acked).
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import redis

from eventfleet.bench.env import BenchEnv, BenchError, owners, start_settled
from ledger.events import AddItem, Topup
from ledger.shards import ShardCounts, item_shard, user_shard
from producer.client import Producer
from store import ids
from store.keys import GROUP, Keys
from worker.assignment import assign

COUNTS = ShardCounts(16, 16)
WORKERS = 4


def probe_for(shard: str, counts: ShardCounts) -> Topup | AddItem:
    """A harmless event whose home is ``shard``."""
    n = 0
    while True:
        n += 1
        if shard[0] == "u" and user_shard(10_000_000 + n, counts) == shard:
            return Topup(user_id=10_000_000 + n, amount=1)
        if shard[0] == "i" and item_shard(f"probe-{n}", counts) == shard:
            return AddItem(item_id=f"probe-{n}", count=1, price=0)


def _applied(r: redis.Redis, keys: Keys, shard: str, probe_id: str) -> bool:
    groups: Any = r.xinfo_groups(keys.events(shard))
    for g in groups:
        if ids.text(g["name"]) == GROUP:
            delivered = ids.text(g["last-delivered-id"])
            return not ids.after(probe_id, delivered) and int(g["pending"]) == 0
    return False


def failover(env: BenchEnv, ttl_ms: int) -> dict[str, Any]:
    keys = env.namespace("bench-h", COUNTS)
    fleet, workers = start_settled(
        env, keys.ns, keys, COUNTS, WORKERS, {"EVENTFLEET_LEASE_TTL_MS": str(ttl_ms)}
    )
    shards = COUNTS.all_shards()
    plan = assign(shards, [w.worker_id for w in workers])
    victim = max(workers, key=lambda w: sum(1 for o in plan.values() if o == w.worker_id))
    held = sorted(s for s, o in plan.items() if o == victim.worker_id)
    probes = {s: probe_for(s, COUNTS) for s in held}
    producer = Producer(env.client, keys, COUNTS)

    t_kill = time.perf_counter()
    fleet.kill(victim)
    entry_ids = producer.send([producer.stamp(probes[s]) for s in held])
    probe_ids = dict(zip(held, entry_ids, strict=True))
    recovered: dict[str, float] = {}
    new_owner: dict[str, str | None] = {}
    end = time.monotonic() + ttl_ms / 1000 * 4 + 30
    while len(recovered) < len(held):
        if time.monotonic() > end:
            missing = sorted(set(held) - set(recovered))
            raise BenchError(f"shards {missing} did not recover after the kill")
        now_owners = owners(env.client, keys, held)
        for s in held:
            if s in recovered:
                continue
            owner = now_owners[s]
            if owner not in (None, victim.worker_id) and _applied(
                env.client, keys, s, probe_ids[s]
            ):
                recovered[s] = time.perf_counter() - t_kill
                new_owner[s] = owner
        time.sleep(0.005)
    fleet.stop_all()
    env.drop(keys)
    times = sorted(recovered.values())
    return {
        "workers": WORKERS,
        "lease_ttl_ms": ttl_ms,
        "target_max_s": ttl_ms / 1000 + 1,
        "shards_of_killed_worker": len(held),
        "per_shard_s": {s: round(recovered[s], 3) for s in held},
        "p50_s": round(statistics.median(times), 3),
        "max_s": round(times[-1], 3),
        "new_owners": sorted({o for o in new_owner.values() if o}),
    }
