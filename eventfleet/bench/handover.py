"""Calm scaling (scenario o): how long each shard that moves on purpose stays without an
owner, when a fleet scales 2 -> 4 workers and back under a paced load, on a single Redis and
on a throwaway 3-master Redis Cluster.

Each round starts two workers beside the two running ones and waits until every shard is
held by its rendezvous target; then SIGTERMs two workers that hold shards and waits again.
Per moved shard (``eventfleet.local.moves``, from the workers' logs): *unowned*, from the old
owner's release (after its final snapshot) to the new owner's acquisition, and *until
ready*, to the end of the new owner's takeover (its next batch reads the shard). The lease
TTL is the shipped default (5 s): a joining worker that waited for its next pass left each
shard unowned for most of a third of it.
"""

from __future__ import annotations

import contextlib
import random
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from eventfleet.bench.cluster import Backend
from eventfleet.bench.env import BenchError, deadline_wait
from eventfleet.chaos.paced import PacedProducer
from eventfleet.ledger.shards import ShardCounts
from eventfleet.local.fleet import LocalFleet, WorkerProc
from eventfleet.local.moves import Move, moves, releases, summary
from eventfleet.producer.workload import mixed
from eventfleet.store import ids
from eventfleet.store.keys import Keys
from eventfleet.store.namespace import init_namespace
from eventfleet.store.shardreads import parse_lease
from eventfleet.worker.assignment import assign

COUNTS = ShardCounts(16, 16)
TARGET_S = 0.3
"""The bound on the time a moved shard stays without an owner (p50 and max)."""
RATE = 3000.0
"""Offered load (mixed events/s) while the fleet scales."""
ENV = {"EVENTFLEET_LOG_LEVEL": "info", "EVENTFLEET_LEASE_TTL_MS": "5000"}


def wait_settled(
    b: Backend, keys: Keys, members: list[str], timeout: float, counts: ShardCounts = COUNTS
) -> None:
    """Every shard of ``counts`` leased by its rendezvous target over ``members`` (one GET
    per shard in a pipeline: on a cluster, one per master)."""
    shards = counts.all_shards()
    want = assign(shards, members)

    def settled() -> bool:
        live = sorted(ids.text(m) for m in b.r.zrange(keys.workers, 0, -1))
        pipe = b.r.pipeline(transaction=False)
        for s in shards:
            pipe.get(keys.lease(s))
        leases = [parse_lease(v) for v in pipe.execute()]
        held = {s: None if x is None else x.owner for s, x in zip(shards, leases, strict=True)}
        return live == sorted(members) and held == want

    deadline_wait(settled, timeout, f"{len(members)} workers to settle ownership", poll=0.02)


def _logs(fleet: LocalFleet) -> list[tuple[str, Path]]:
    return [(w.worker_id, w.log_path) for w in fleet.workers]


def _step(
    b: Backend, keys: Keys, fleet: LocalFleet, workers: list[WorkerProc], act: Callable[[], None]
) -> tuple[list[Move], float]:
    """``act``, then until the fleet has settled and every move is logged: the moves since
    ``act`` and the seconds until settled."""
    t_wall, t0 = time.time(), time.perf_counter()
    act()
    wait_settled(b, keys, [w.worker_id for w in workers], timeout=60)
    settled = time.perf_counter() - t0

    def logged() -> bool:
        return len(moves(_logs(fleet), t_wall)) >= releases(_logs(fleet), t_wall)

    with contextlib.suppress(BenchError):
        deadline_wait(logged, 30, "the new owners' lease_acquired lines", poll=0.05)
    return moves(_logs(fleet), t_wall), settled


def run_backend(kind: str, rounds: int, rate: float, redis_args: list[str]) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix=f"ef-handover-{kind}-"))
    b = Backend(kind, workdir, redis_args)
    keys = Keys(f"bench-o-{kind}")
    init_namespace(b.r, keys, COUNTS)
    fleet = LocalFleet(b.url, keys.ns, workdir / "logs", env=ENV, name=f"o{kind[0]}-w")
    producer: PacedProducer | None = None
    up: list[Move] = []
    down: list[Move] = []
    settle_s: dict[str, list[float]] = {"up": [], "down": []}
    try:
        workers = [fleet.start() for _ in range(2)]
        wait_settled(b, keys, [w.worker_id for w in workers], timeout=120)
        events = mixed(10_000_000, seed=41, users=10_000, items=1_000)
        producer = PacedProducer(b.r, keys, COUNTS, events, rate=rate, chunk=200)
        producer.start()
        deadline_wait(lambda: producer is not None and producer.published >= rate, 60, "load")
        rng = random.Random(41)
        for _ in range(rounds):

            def grow() -> None:
                workers.extend(fleet.start() for _ in range(2))

            got, s = _step(b, keys, fleet, workers, grow)
            up += got
            settle_s["up"].append(round(s, 3))
            time.sleep(1.0)
            leaving = rng.sample(workers, 2)

            def shrink(leaving: list[WorkerProc] = leaving) -> None:
                for w in leaving:
                    workers.remove(w)
                    w.proc.send_signal(15)

            got, s = _step(b, keys, fleet, workers, shrink)
            down += got
            settle_s["down"].append(round(s, 3))
            for w in leaving:
                if w.proc.wait(timeout=30) != 0:
                    raise BenchError(f"{w.worker_id} did not drain cleanly")
            time.sleep(1.0)
        if producer.error:
            raise BenchError(f"the producer failed: {producer.error}")
    finally:
        if producer is not None:
            producer.stop.set()
            producer.join(30)
        fleet.stop_all(timeout=15)
        b.close()
        shutil.rmtree(workdir, ignore_errors=True)
    return {
        "backend": kind,
        "rounds": rounds,
        "offered_per_s": rate,
        "up": summary(up) | {"settled_s": settle_s["up"]},
        "down": summary(down) | {"settled_s": settle_s["down"]},
    }


def handover(
    rounds: int, rate: float = RATE, redis_args: list[str] | None = None
) -> dict[str, Any]:
    """Both backends; flat fields ``<backend>_<up|down>_<unowned|ready>_<p50|max>_s`` for
    ``eventfleet bench``'s figures."""
    out: dict[str, Any] = {"lease_ttl_ms": 5000, "target_s": TARGET_S, "runs": []}
    for kind in ("single", "cluster"):
        run = run_backend(kind, rounds, rate, redis_args or [])
        out["runs"].append(run)
        for way in ("up", "down"):
            for what in ("unowned", "ready"):
                for stat in ("p50", "max"):
                    key = f"{what}_{stat}_s"
                    if key in run[way]:
                        out[f"{kind}_{way}_{key}"] = run[way][key]
    ready = [run[way].get("ready_max_s", 0.0) for run in out["runs"] for way in ("up", "down")]
    out["ready_max_s"] = max(ready)
    return out
