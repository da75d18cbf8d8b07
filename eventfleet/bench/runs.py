"""Throughput and latency scenarios: a (producer), b and c (apply, 1 and 2 workers), d (mixed
workload, fully settled), e and f (reference consumers on b's data), g (latency at a fixed
offered load). Each returns a plain dict of what it measured.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass
from typing import Any

from eventfleet.bench import baselines as bench_baselines
from eventfleet.bench.env import (
    BenchEnv,
    BenchError,
    append_to_logs,
    cpu_seconds,
    deadline_wait,
    entries_read,
    first_read_and_idle,
    log_events,
    peak_rss_mb,
    stage,
    start_settled,
    swap_in,
)
from eventfleet.ledger.events import Order, Topup
from eventfleet.ledger.shards import ShardCounts
from eventfleet.local.fleet import WorkerProc
from eventfleet.ops.status import is_idle
from eventfleet.producer.client import Producer
from eventfleet.producer.files import parse_lines
from eventfleet.producer.workload import mixed
from eventfleet.store import ids
from eventfleet.store.keys import Keys

COUNTS = ShardCounts(16, 16)
MIXED_USERS = 10_000
MIXED_ITEMS = 1_000


@dataclass(frozen=True)
class Sizes:
    producer_events: int
    apply_events: int
    mixed_events: int
    naive_events: int
    latency_rate: float
    latency_seconds: float
    failover_ttl_ms: int
    snapshot_users: int
    order_setup: int = 20_000
    orders: int = 100_000


FULL = Sizes(200_000, 200_000, 200_000, 20_000, 5_000.0, 10.0, 5_000, 1_000_000)
QUICK = Sizes(20_000, 20_000, 20_000, 2_000, 5_000.0, 2.0, 1_000, 100_000, 2_000, 10_000)


def topup_batch(n: int, seed: int) -> list[Topup]:
    """``n`` top-ups over 100,000 users (so spread evenly over the 16 user shards)."""
    rng = random.Random(seed)
    return [Topup(user_id=rng.randint(1, 100_000), amount=rng.randint(1, 1000)) for _ in range(n)]


def _rate(events: int, seconds: float) -> float:
    return round(events / seconds, 1) if seconds > 0 else 0.0


def _lost_leases(workers: list[WorkerProc]) -> int:
    return sum(len(log_events(w, "lease_lost")) for w in workers)


# ---- a ----------------------------------------------------------------------------------
def producer_file(env: BenchEnv, n: int) -> dict[str, Any]:
    """``produce file``'s code path: validate the whole JSON-lines file, then publish it."""
    keys = env.namespace("bench-a", COUNTS)
    path = env.workdir / "events.jsonl"
    with open(path, "w", encoding="utf-8") as f:
        for ev in mixed(n, seed=7, users=MIXED_USERS, items=MIXED_ITEMS):
            f.write(ev.model_dump_json() + "\n")
    t0 = time.perf_counter()
    with open(path, "rb") as f:
        events = parse_lines(f)
    t1 = time.perf_counter()
    sent = Producer(env.client, keys, COUNTS).publish(events)
    t2 = time.perf_counter()
    env.drop(keys)
    return {
        "events": sent,
        "seconds": round(t2 - t0, 4),
        "events_per_s": _rate(sent, t2 - t0),
        "validate_per_s": _rate(sent, t1 - t0),
        "publish_per_s": _rate(sent, t2 - t1),
    }


# ---- b, c, d, e, f ----------------------------------------------------------------------
def backlog(
    env: BenchEnv,
    name: str,
    workers: int,
    events: list[Any],
    *,
    keep: bool = False,
    extra: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Settled workers, then a pre-loaded backlog swapped in at once: first read to idle.
    ``extra``: more worker environment (e.g. ``EVENTFLEET_STANDBYS``)."""
    keys = env.namespace(name, COUNTS)
    fleet, procs = start_settled(env, keys.ns, keys, COUNTS, workers, extra or {})
    staged = stage(env, keys, COUNTS, events)
    base = entries_read(env.client, keys, COUNTS.all_shards())  # settled workers may take
    swap_in(env, staged, keys, COUNTS)  # the whole backlog before the wait below starts
    win = first_read_and_idle(env, keys, COUNTS, 300, procs, base)
    applied = entries_read(env.client, keys, COUNTS.all_shards())
    lost = _lost_leases(procs)
    rss = max(peak_rss_mb(w.proc.pid) for w in procs)
    fleet.stop_all()
    if not keep:
        env.drop(keys)
    return {
        "events": len(events),
        "entries_applied": applied,
        "events_per_s": _rate(len(events), win.seconds),
        "entries_per_s": _rate(applied, win.seconds),
        **win.report(workers),
        "lease_losses": lost,
        "worker_peak_rss_mb": round(rss, 1),
    }


def one_worker(env: BenchEnv, n: int, naive_n: int, batch: int) -> dict[str, Any]:
    """b on a backlog of top-ups, then e and f on the same entries."""
    events = topup_batch(n, seed=1)
    b = backlog(env, "bench-b", 1, events)
    # The baselines read a log of one event per entry, as a hand-written consumer's producer
    # (one XADD per event) leaves it; eventfleet's producer writes bundles (ledger.bundle).
    keys = env.namespace("bench-bl", COUNTS)
    append_to_logs(env.client, keys, COUNTS, events)
    shards = [f"u{i}" for i in range(COUNTS.users)]
    e = bench_baselines.run_in_child("naive", env.url, keys.ns, shards, naive_n, batch)
    f = bench_baselines.run_in_child("bare", env.url, keys.ns, shards, n, batch)
    env.drop(keys)
    e["events_per_s"] = _rate(e["events"], e["seconds"])
    f["events_per_s"] = _rate(f["events"], f["seconds"])
    return {"b": b, "e": e, "f": f}


def two_workers(env: BenchEnv, kind: str, n: int) -> dict[str, Any]:
    if kind == "topups":
        return backlog(env, "bench-c", 2, topup_batch(n, seed=2))
    return backlog(env, "bench-d", 2, list(mixed(n, seed=3, users=MIXED_USERS, items=MIXED_ITEMS)))


# ---- g ----------------------------------------------------------------------------------
def latency(env: BenchEnv, rate: float, seconds: float) -> dict[str, Any]:
    """Mixed events at a fixed offered rate into two settled workers; for each order, the
    time from its publish (the producer's clock, just before the push) to its outcome entry
    (the id Redis gave it): the inbox, both hops of the saga. Redis runs on this host, so
    both are the same clock."""
    keys = env.namespace("bench-g", COUNTS)
    fleet, workers = start_settled(env, keys.ns, keys, COUNTS, 2, {})
    total = int(rate * seconds)
    events = list(mixed(total, seed=5, users=MIXED_USERS, items=MIXED_ITEMS))
    producer = Producer(env.client, keys, COUNTS)
    sent = 0
    placed: dict[str, int] = {}
    redis_pid = env.server.proc.pid if env.server and env.server.proc else 0
    cpu0 = [cpu_seconds(w.proc.pid) for w in workers], cpu_seconds(redis_pid)
    start = time.perf_counter()
    while sent < total:
        due = min(total, int((time.perf_counter() - start) * rate) + 1)
        if due > sent:
            now_ms = int(time.time() * 1000)
            placed.update((ev.order_id, now_ms) for ev in events[sent:due] if isinstance(ev, Order))
            producer.send([producer.stamp(ev) for ev in events[sent:due]])
            sent = due
        else:
            time.sleep(0.001)
    offered_s = time.perf_counter() - start
    deadline_wait(lambda: is_idle(env.client, keys, COUNTS), 120, "idle after the load")
    busy_s = time.perf_counter() - start
    cpu1 = [cpu_seconds(w.proc.pid) for w in workers], cpu_seconds(redis_pid)
    lost = _lost_leases(workers)
    fleet.stop_all()
    lat = order_latencies_ms(env, keys, placed)
    env.drop(keys)
    if not lat:
        raise BenchError("no order outcomes were written")
    lat.sort()
    return {
        "offered_events": total,
        "offered_per_s": _rate(total, offered_s),
        "orders": len(lat),
        "p50_ms": _pct(lat, 50),
        "p99_ms": _pct(lat, 99),
        "max_ms": float(lat[-1]),
        "worker_cpu_util": round((sum(cpu1[0]) - sum(cpu0[0])) / busy_s / len(workers), 2),
        "redis_cpu_util": round((cpu1[1] - cpu0[1]) / busy_s, 2),
        "lease_losses": lost,
    }


def _pct(sorted_vals: list[int], p: float) -> float:
    i = min(len(sorted_vals) - 1, max(0, round(p / 100 * len(sorted_vals) + 0.5) - 1))
    return float(sorted_vals[i])


def _scan(env: BenchEnv, stream: str) -> list[tuple[int, dict[bytes, bytes]]]:
    out: list[tuple[int, dict[bytes, bytes]]] = []
    start = "-"
    while True:
        batch: Any = env.client.xrange(stream, min=start, max="+", count=5000)
        if not batch:
            return out
        out.extend((ids.millis(eid), fields) for eid, fields in batch)
        after = ids.after_range(batch[-1][0])
        if after is None:
            return out
        start = after


def order_latencies_ms(env: BenchEnv, keys: Keys, placed: dict[str, int]) -> list[int]:
    """Per order with an outcome: the outcome entry's time minus when it was published."""
    out = []
    for n in range(COUNTS.users):
        for ms, fields in _scan(env, keys.outcomes(f"u{n}")):
            oid = json.loads(fields[b"outcome"])["order_id"]
            if oid in placed:
                out.append(ms - placed[oid])
    return out
