"""Throughput on a single Redis and on a local 3-master Redis Cluster, with 1..N workers.

Each run: a fresh namespace, N workers settled on their shards, the workers paused
(SIGSTOP) while the events are pre-loaded, resumed, and timed from the group's first delivery
to idle (every entry read and acked, saga steps included). The figures are entries applied per
second, internal saga events included, and external events per second (an entry may be a
bundle of events). docs/SCALING.md explains what limits each figure.

``python -m eventfleet.bench.cluster [--quick]`` prints one JSON document;
``scaling`` is what ``eventfleet bench`` can call for its cluster figures.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import redis

from eventfleet.bench.env import cpu_seconds
from eventfleet.ledger.events import ExternalEvent
from eventfleet.ledger.shards import ShardCounts
from eventfleet.local.cluster import LocalCluster
from eventfleet.local.fleet import LocalFleet, WorkerProc
from eventfleet.local.redisserver import LocalRedis
from eventfleet.ops.status import is_idle
from eventfleet.producer.client import Producer
from eventfleet.producer.workload import mixed
from eventfleet.store import ids
from eventfleet.store.connection import connect
from eventfleet.store.keys import GROUP, Keys
from eventfleet.store.namespace import init_namespace
from eventfleet.store.settings import Settings
from eventfleet.store.shardreads import parse_lease

COUNTS = ShardCounts(16, 16)
WORKER_ENV = {"EVENTFLEET_LOG_LEVEL": "warning", "EVENTFLEET_LEASE_TTL_MS": "5000"}


class Backend:
    """A throwaway single redis-server or a 3-master cluster, and a client for it."""

    def __init__(self, kind: str, workdir: Path, redis_args: list[str] | None = None) -> None:
        self.kind = kind
        self.server: LocalRedis | LocalCluster
        if kind == "single":
            (workdir / "redis").mkdir(parents=True)
            self.server = LocalRedis(workdir=workdir / "redis", extra_args=redis_args).start()
        else:
            self.server = LocalCluster(workdir=workdir / "cluster", extra_args=redis_args).start()
        self.url = self.server.url
        self.r = connect(Settings(redis_url=self.url), timeout=30)

    def pids(self) -> list[int]:
        nodes = [self.server] if isinstance(self.server, LocalRedis) else self.server.nodes
        return [n.proc.pid for n in nodes if n.proc is not None]

    def close(self) -> None:
        self.r.close()
        self.server.close()


def _cpu(pids: list[int]) -> float:
    return sum(cpu_seconds(p) for p in pids)


def _entries_read(r: redis.Redis, keys: Keys) -> int:
    pipe = r.pipeline(transaction=False)
    for s in COUNTS.all_shards():
        pipe.xinfo_groups(keys.events(s))
    return sum(
        int(g.get("entries-read") or 0)
        for groups in pipe.execute()
        for g in groups
        if ids.text(g["name"]) == GROUP
    )


def _owners(r: redis.Redis, keys: Keys) -> set[str | None]:
    pipe = r.pipeline(transaction=False)
    for s in COUNTS.all_shards():
        pipe.get(keys.lease(s))
    leases = (parse_lease(v) for v in pipe.execute())
    return {None if lease is None else lease.owner for lease in leases}


def _wait(cond: Callable[[], bool], timeout: float, what: str, poll: float = 0.005) -> float:
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(poll)
    return time.perf_counter()


@contextlib.contextmanager
def _paused(workers: list[WorkerProc]) -> Iterator[None]:
    for w in workers:
        os.kill(w.proc.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for w in workers:
            os.kill(w.proc.pid, signal.SIGCONT)


def backlog(
    b: Backend, workdir: Path, name: str, workers: int, events: list[ExternalEvent]
) -> dict[str, Any]:
    """``workers`` settled workers apply ``events`` pre-loaded while they were paused."""
    keys = Keys(name)
    init_namespace(b.r, keys, COUNTS)
    fleet = LocalFleet(b.url, name, workdir / "logs" / name, env=WORKER_ENV, name=f"{name}-w")
    try:
        ws = [fleet.start() for _ in range(workers)]
        want = {w.worker_id for w in ws}
        _wait(lambda: _owners(b.r, keys) == want, 60, f"{workers} workers to hold every shard")
        with _paused(ws):
            Producer(b.r, keys, COUNTS).publish(events)
            cpu_redis, cpu_workers = _cpu(b.pids()), _cpu([w.proc.pid for w in ws])
        t0 = _wait(lambda: _entries_read(b.r, keys) > 0, 60, "the first read", poll=0.001)
        t1 = _wait(lambda: is_idle(b.r, keys, COUNTS), 600, "idle", poll=0.01)
        cpu_redis = _cpu(b.pids()) - cpu_redis
        cpu_workers = _cpu([w.proc.pid for w in ws]) - cpu_workers
        applied = _entries_read(b.r, keys)
        if not all(w.alive for w in ws):
            raise RuntimeError("a worker died during the run")
    finally:
        fleet.stop_all(timeout=15)
    return {
        "backend": b.kind,
        "workers": workers,
        "events": len(events),
        "entries_applied": applied,
        "seconds": round(t1 - t0, 3),
        "entries_per_s": round(applied / (t1 - t0), 1),
        # stream entries may be bundles of many events (ledger.bundle): events are what
        # compares across versions
        "events_per_s": round(len(events) / (t1 - t0), 1),
        "redis_cpu_us_per_entry": round(cpu_redis / applied * 1e6, 1),
        "worker_cpu_us_per_entry": round(cpu_workers / applied * 1e6, 1),
    }


def scaling(
    events: int = 200_000,
    workers: tuple[int, ...] = (1, 2, 3),
    say: Callable[[str], None] = lambda s: None,
    redis_args: list[str] | None = None,
) -> dict[str, Any]:
    """The mixed workload on a single Redis and on a 3-master cluster, for each fleet size.

    Besides ``runs``, the result has flat fields for ``eventfleet bench``'s figures:
    ``<backend>_<n>w`` (entries per second), ``<backend>_<n>w_events`` (external events per
    second) and ``ratio_<n>w`` (cluster / single, in events per second).
    """
    work = list(mixed(events, seed=3, users=10_000, items=1_000))
    runs = []
    for kind in ("single", "cluster"):
        workdir = Path(tempfile.mkdtemp(prefix=f"ef-scale-{kind}-"))
        b = Backend(kind, workdir, redis_args)
        try:
            for n in workers:
                run = backlog(b, workdir, f"scale{n}", n, work)
                say(
                    f"{kind:>7}, {n} worker(s): {run['events_per_s']:>9,.0f} events/s, "
                    f"{run['entries_per_s']:,.0f} entries/s "
                    f"({run['entries_applied']} in {run['seconds']} s; CPU per entry: "
                    f"redis {run['redis_cpu_us_per_entry']} us, "
                    f"workers {run['worker_cpu_us_per_entry']} us)"
                )
                runs.append(run)
        finally:
            b.close()
            shutil.rmtree(workdir, ignore_errors=True)
    flat = {f"{r['backend']}_{r['workers']}w": r["entries_per_s"] for r in runs}
    flat.update({f"{r['backend']}_{r['workers']}w_events": r["events_per_s"] for r in runs})
    for n in workers:
        single, cluster = flat.get(f"single_{n}w_events"), flat.get(f"cluster_{n}w_events")
        if single and cluster:
            flat[f"ratio_{n}w"] = round(cluster / single, 2)
    return {"cpus": os.cpu_count(), "events": events, "runs": runs, **flat}


def main(argv: list[str]) -> int:
    quick = "--quick" in argv

    def say(line: str) -> None:
        sys.stderr.write(line + "\n")

    doc = scaling(events=10_000 if quick else 200_000, say=say)
    sys.stdout.write(json.dumps(doc, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
