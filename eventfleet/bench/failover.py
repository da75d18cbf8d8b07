"""Failover (figure h): SIGKILL a settled worker of four, again and again, and time each kill
until every shard it held has applied a probe event published right after the kill, under
another owner (the probe was moved from the shard's inbox into its log, the group delivered
past it and nothing is pending: applied and acked).
After each kill a replacement joins and the fleet settles before the next kill.

The same loop, with a paced workload running and the new owners' ``lease_acquired`` log lines
collected, gives the replay figures of scenario s (``eventfleet.bench.standby``).
"""

from __future__ import annotations

import random
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

import redis

from eventfleet.bench.env import BenchEnv, BenchError, log_events, owners, wait_settled
from eventfleet.ledger.bundle import split
from eventfleet.ledger.events import AddItem, Topup
from eventfleet.ledger.shards import ShardCounts, item_shard, user_shard
from eventfleet.local.fleet import LocalFleet, WorkerProc
from eventfleet.producer.client import Producer
from eventfleet.store import ids
from eventfleet.store.keys import EVENT_FIELD, GROUP, Keys

COUNTS = ShardCounts(16, 16)
WORKERS = 4
TARGET_S = 0.5
"""The issue's target for the kill-to-first-apply time (p50 and max)."""


def probe_for(shard: str, counts: ShardCounts) -> Topup | AddItem:
    """A harmless event whose home is ``shard``."""
    n = 0
    while True:
        n += 1
        if shard[0] == "u" and user_shard(10_000_000 + n, counts) == shard:
            return Topup(user_id=10_000_000 + n, amount=1)
        if shard[0] == "i" and item_shard(f"probe-{n}", counts) == shard:
            return AddItem(item_id=f"probe-{n}", count=1, price=0)


class Probe:
    """A probe sent to a shard's inbox: its entry id once its owner has moved it into the log
    (found by its text, scanning the log from where it ended at the kill)."""

    def __init__(self, text: str, after: str) -> None:
        self.text = text.encode()
        self.cursor = after
        self.entry_id: str | None = None

    def find(self, r: redis.Redis, stream: str) -> str | None:
        while self.entry_id is None:
            start = ids.after_range(self.cursor)
            if start is None:
                return None
            got: Any = r.xrange(stream, min=start, max="+", count=1000)
            for eid, fields in got:
                ev = fields.get(EVENT_FIELD)
                # the owner's move may have bundled it with other events (ledger.bundle)
                if ev == self.text or (ev is not None and self.text in split(ev)):
                    self.entry_id = ids.text(eid)
                    break
            if not got or self.entry_id is not None:
                break
            self.cursor = ids.text(got[-1][0])
        return self.entry_id


def _applied(r: redis.Redis, keys: Keys, shard: str, probe: Probe) -> bool:
    probe_id = probe.find(r, keys.events(shard))
    if probe_id is None:
        return False  # still in the inbox
    groups: Any = r.xinfo_groups(keys.events(shard))
    for g in groups:
        if ids.text(g["name"]) == GROUP:
            delivered = ids.text(g["last-delivered-id"])
            return not ids.after(probe_id, delivered) and int(g["pending"]) == 0
    return False


@dataclass
class Kill:
    """One kill: the victim, its shards, and per shard the seconds until a probe applied."""

    victim: str
    shards: list[str]
    per_shard_s: dict[str, float] = field(default_factory=dict)

    @property
    def first_s(self) -> float:
        return min(self.per_shard_s.values())

    @property
    def all_s(self) -> float:
        return max(self.per_shard_s.values())


def kill_and_time(
    env: BenchEnv, keys: Keys, fleet: LocalFleet, workers: list[WorkerProc], rng: random.Random
) -> tuple[Kill, WorkerProc]:
    """SIGKILL one worker that holds shards; time each of its shards until a probe applies
    under a new owner. Returns the kill and the victim (removed from ``workers``)."""
    shards = COUNTS.all_shards()
    now = owners(env.client, keys, shards)
    holding = [w for w in workers if w.worker_id in now.values()]
    if not holding:
        raise BenchError("no worker holds a shard")
    victim = rng.choice(holding)
    held = sorted(s for s, o in now.items() if o == victim.worker_id)
    producer = Producer(env.client, keys, COUNTS)
    batch = [producer.stamp(probe_for(s, COUNTS)) for s in held]
    ends = [ids.text(env.client.xinfo_stream(keys.events(s))["last-generated-id"]) for s in held]
    probes = {s: Probe(text, end) for s, (_key, text), end in zip(held, batch, ends, strict=True)}
    t_kill = time.perf_counter()
    fleet.kill(victim)
    producer.send(batch)
    workers.remove(victim)
    k = Kill(victim.worker_id, held)
    end = time.monotonic() + 60
    while len(k.per_shard_s) < len(held):
        if time.monotonic() > end:
            missing = sorted(set(held) - set(k.per_shard_s))
            raise BenchError(f"shards {missing} did not recover after the kill")
        cur = owners(env.client, keys, held)
        for s in held:
            if s in k.per_shard_s:
                continue
            if cur[s] not in (None, victim.worker_id) and _applied(env.client, keys, s, probes[s]):
                k.per_shard_s[s] = time.perf_counter() - t_kill
        time.sleep(0.002)
    return k, victim


def replace_and_settle(
    env: BenchEnv, keys: Keys, fleet: LocalFleet, workers: list[WorkerProc]
) -> None:
    workers.append(fleet.start())
    wait_settled(env.client, keys, COUNTS, [w.worker_id for w in workers], timeout=120)


def takeovers_of(workers: list[WorkerProc], victim: str) -> list[dict[str, Any]]:
    """The ``lease_acquired`` lines of the takeovers that broke ``victim``'s leases."""
    return [
        e
        for w in workers
        for e in log_events(w, "lease_acquired")
        if str(e.get("broke") or "").startswith(victim + ":")
    ]


def pct(values: list[float], p: float) -> float:
    v = sorted(values)
    return v[min(len(v) - 1, max(0, round(p / 100 * len(v) + 0.5) - 1))]


def failover(env: BenchEnv, ttl_ms: int, kills: int) -> dict[str, Any]:
    keys = env.namespace("bench-h", COUNTS)
    fleet = env.fleet(keys.ns, {"EVENTFLEET_LEASE_TTL_MS": str(ttl_ms)})
    workers = [fleet.start() for _ in range(WORKERS)]
    wait_settled(env.client, keys, COUNTS, [w.worker_id for w in workers], timeout=120)
    rng = random.Random(17)
    done: list[Kill] = []
    broken = 0
    for _ in range(kills):
        k, victim = kill_and_time(env, keys, fleet, workers, rng)
        done.append(k)
        broken += len({e["shard"] for e in takeovers_of(workers, victim.worker_id)})
        replace_and_settle(env, keys, fleet, workers)
    fleet.stop_all()
    env.drop(keys)
    firsts = [k.first_s for k in done]
    alls = [k.all_s for k in done]
    shards = [s for k in done for s in k.per_shard_s.values()]
    return {
        "workers": WORKERS,
        "lease_ttl_ms": ttl_ms,
        "kills": len(done),
        "shards_failed_over": len(shards),
        "shards_taken_by_breaking_the_lease": broken,
        "p50_s": round(statistics.median(firsts), 3),
        "max_s": round(max(firsts), 3),
        "all_shards_p50_s": round(statistics.median(alls), 3),
        "all_shards_max_s": round(max(alls), 3),
        "per_shard_p99_s": round(pct(shards, 99), 3),
        "target_s": TARGET_S,
        "per_kill": [
            {"victim": k.victim, "shards": len(k.shards), "first_s": round(k.first_s, 3),
             "all_s": round(k.all_s, 3)}
            for k in done
        ],
    }  # fmt: skip
