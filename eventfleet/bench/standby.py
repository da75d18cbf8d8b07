"""Warm standbys (scenario s): what a takeover replays after a SIGKILL under a steady mixed
load, with ``EVENTFLEET_STANDBYS`` 1 and 0, and what standbys cost: the two-worker backlogs of
c (top-ups) and d (mixed) with standbys on and off, and the workers' peak RSS in each.
"""

from __future__ import annotations

import contextlib
import random
import statistics
import time
from typing import Any

from eventfleet.bench import runs as bench_runs
from eventfleet.bench.env import BenchEnv, BenchError, deadline_wait, log_events, wait_settled
from eventfleet.bench.failover import COUNTS, WORKERS, Kill, kill_and_time, replace_and_settle
from eventfleet.chaos.paced import PacedProducer
from eventfleet.producer.workload import mixed

RATE = 4000.0
"""Offered load (mixed events/s) while the kills happen."""


def replay_under_load(
    env: BenchEnv, standbys: int, ttl_ms: int, kills: int, rate: float = RATE
) -> dict[str, Any]:
    keys = env.namespace(f"bench-s{standbys}", COUNTS)
    fleet = env.fleet(
        keys.ns, {"EVENTFLEET_LEASE_TTL_MS": str(ttl_ms), "EVENTFLEET_STANDBYS": str(standbys)}
    )
    workers = [fleet.start() for _ in range(WORKERS)]
    wait_settled(env.client, keys, COUNTS, [w.worker_id for w in workers], timeout=120)
    events = mixed(10_000_000, seed=31, users=10_000, items=1_000)
    producer = PacedProducer(env.client, keys, COUNTS, events, rate=rate, chunk=200)
    producer.start()
    rng = random.Random(31)
    replayed: list[int] = []
    warm = 0
    firsts: list[float] = []
    try:
        deadline_wait(lambda: producer.published >= 2 * rate, 60, "the load to run")
        for _ in range(kills):
            marks = {w.worker_id: len(log_events(w, "lease_acquired")) for w in workers}
            k, _victim = kill_and_time(env, keys, fleet, workers, rng)
            firsts.append(k.first_s)

            def new_takeovers(k: Kill = k, marks: dict[str, int] = marks) -> list[dict[str, Any]]:
                return [
                    e
                    for w in workers
                    for e in log_events(w, "lease_acquired")[marks.get(w.worker_id, 0) :]
                    if e["shard"] in k.shards
                ]

            def all_logged(k: Kill = k) -> bool:
                return {e["shard"] for e in new_takeovers()} >= set(k.shards)

            with contextlib.suppress(BenchError):  # count what was logged in 30 s
                deadline_wait(all_logged, 30, "the takeovers to be logged")
            for e in new_takeovers():
                replayed.append(int(e["replayed"]))
                warm += bool(e.get("warm"))
            replace_and_settle(env, keys, fleet, workers)
            time.sleep(2.0)  # the load runs between kills (a pace, not a wait for a result)
    finally:
        producer.stop.set()
        producer.join(30)
        fleet.stop_all()
        env.drop(keys)
    return {
        "standbys": standbys,
        "kills": kills,
        "takeovers": len(replayed),
        "warm_takeovers": warm,
        "replayed_p50": statistics.median(replayed),
        "replayed_max": max(replayed),
        "failover_p50_s": round(statistics.median(firsts), 3),
        "failover_max_s": round(max(firsts), 3),
    }


def standby(
    env: BenchEnv, ttl_ms: int, kills: int, apply_n: int, mixed_n: int, rate: float = RATE
) -> dict[str, Any]:
    on = replay_under_load(env, 1, ttl_ms, kills, rate)
    off = replay_under_load(env, 0, ttl_ms, kills, rate)
    cost: dict[str, Any] = {}
    for n in (1, 0):
        extra = {"EVENTFLEET_STANDBYS": str(n)}
        c = bench_runs.backlog(
            env, f"bench-sc{n}", 2, bench_runs.topup_batch(apply_n, seed=2), extra=extra
        )
        d = bench_runs.backlog(
            env,
            f"bench-sd{n}",
            2,
            list(
                mixed(mixed_n, seed=3, users=bench_runs.MIXED_USERS, items=bench_runs.MIXED_ITEMS)
            ),
            extra=extra,
        )
        tag = "on" if n else "off"
        cost[f"c_{tag}_per_s"] = c["events_per_s"]
        cost[f"d_{tag}_per_s"] = d["events_per_s"]
        cost[f"rss_{tag}_mb"] = max(c["worker_peak_rss_mb"], d["worker_peak_rss_mb"])
    return {
        "lease_ttl_ms": ttl_ms,
        "offered_per_s": rate,
        "batch_size": 1000,
        "with_standbys": on,
        "without_standbys": off,
        "replayed_max_on": on["replayed_max"],
        "replayed_max_off": off["replayed_max"],
        **cost,
    }
