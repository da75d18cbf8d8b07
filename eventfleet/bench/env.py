"""What every benchmark scenario shares: the throwaway Redis, namespaces, worker fleets, and
waiting on the fleet's state in Redis (first read, idle, settled ownership) with deadlines.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import redis

from eventfleet.ledger.codec import encode
from eventfleet.ledger.events import ExternalEvent
from eventfleet.ledger.shards import ShardCounts, destination
from eventfleet.local.fleet import LocalFleet, WorkerProc
from eventfleet.local.redisserver import LocalRedis
from eventfleet.ops.status import is_idle
from eventfleet.producer.client import Producer
from eventfleet.store import ids
from eventfleet.store.keys import EVENT_FIELD, GROUP, VIA_FIELD, VIA_INBOX, Keys
from eventfleet.store.namespace import init_namespace
from eventfleet.store.shardreads import parse_lease
from eventfleet.worker.assignment import assign

Say = Callable[[str], None]


class BenchError(RuntimeError):
    """A scenario could not complete (a deadline passed, a worker died)."""


@dataclass
class BenchEnv:
    """One throwaway redis-server and the worker fleets started against it."""

    redis_args: list[str]
    say: Say
    server: LocalRedis | None = None
    r: redis.Redis | None = None
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="ef-bench-")))
    fleets: list[LocalFleet] = field(default_factory=list)

    def start(self) -> BenchEnv:
        self.server = LocalRedis(workdir=self.workdir / "redis", extra_args=self.redis_args)
        self.server.dir.mkdir(parents=True, exist_ok=True)
        self.server.start()
        self.r = redis.Redis.from_url(self.server.url, socket_timeout=30)
        return self

    @property
    def client(self) -> redis.Redis:
        assert self.r is not None, "BenchEnv.start() first"
        return self.r

    @property
    def url(self) -> str:
        assert self.server is not None, "BenchEnv.start() first"
        return self.server.url

    def namespace(self, name: str, counts: ShardCounts) -> Keys:
        keys = Keys(name)
        init_namespace(self.client, keys, counts)
        return keys

    def fleet(self, ns: str, env: dict[str, str] | None = None) -> LocalFleet:
        f = LocalFleet(
            self.url,
            ns,
            self.workdir / "logs" / ns,
            env={"EVENTFLEET_LOG_LEVEL": "info", **(env or {})},
            name=f"{ns}-w",
        )
        self.fleets.append(f)
        return f

    def drop(self, keys: Keys) -> None:
        """Delete a finished scenario's keys so later ones run on a small dataset."""
        batch: list[Any] = []
        for k in self.client.scan_iter(match=f"{keys.ns}:*", count=1000):
            batch.append(k)
            if len(batch) >= 1000:
                self.client.delete(*batch)
                batch = []
        if batch:
            self.client.delete(*batch)

    def close(self) -> None:
        for f in self.fleets:
            with contextlib.suppress(Exception):
                f.stop_all(timeout=15)
        if self.r is not None:
            self.r.close()
        if self.server is not None:
            self.server.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> BenchEnv:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---- waiting on state ------------------------------------------------------------------
def deadline_wait(cond: Callable[[], bool], timeout: float, what: str, poll: float = 0.01) -> float:
    """Poll ``cond`` until true; return ``perf_counter()`` when it was first seen true."""
    end = time.monotonic() + timeout
    while True:
        if cond():
            return time.perf_counter()
        if time.monotonic() > end:
            raise BenchError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(poll)


def entries_read(r: redis.Redis, keys: Keys, shards: Iterable[str]) -> int:
    """Entries the group has delivered, summed over ``shards`` (XINFO GROUPS entries-read)."""
    pipe = r.pipeline(transaction=False)
    for s in shards:
        pipe.xinfo_groups(keys.events(s))
    total = 0
    for groups in pipe.execute():
        for g in groups:
            if ids.text(g["name"]) == GROUP:
                total += int(g.get("entries-read") or 0)
    return total


def check_alive(workers: list[WorkerProc]) -> None:
    for w in workers:
        if not w.alive:
            tail = w.log_path.read_text(errors="replace")[-1500:] if w.log_path.exists() else ""
            raise BenchError(f"worker {w.worker_id} exited ({w.proc.returncode}):\n{tail}")


@dataclass(frozen=True)
class Window:
    """From the first read to idle, with the CPU the workers and Redis used meanwhile."""

    t0: float
    t1: float
    worker_cpu_s: float
    redis_cpu_s: float

    @property
    def seconds(self) -> float:
        return self.t1 - self.t0

    def report(self, workers: int) -> dict[str, float]:
        s = self.seconds or 1e-9
        return {
            "seconds": round(self.seconds, 4),
            "worker_cpu_util": round(self.worker_cpu_s / s / workers, 2),
            "redis_cpu_util": round(self.redis_cpu_s / s, 2),
        }


def first_read_and_idle(
    env: BenchEnv,
    keys: Keys,
    counts: ShardCounts,
    timeout: float,
    workers: list[WorkerProc],
    base: int | None = None,
) -> Window:
    """Wait for the group's first delivery, then for idle (``perf_counter`` times). ``base``:
    the entries read before the backlog was put in place (taken now when not given; a caller
    whose workers may take the whole backlog before this call reads it must pass it)."""
    r, shards = env.client, counts.all_shards()
    if base is None:
        base = entries_read(r, keys, shards)
    redis_pid = env.server.proc.pid if env.server and env.server.proc else 0

    def cpu() -> tuple[float, float]:
        return sum(cpu_seconds(w.proc.pid) for w in workers), cpu_seconds(redis_pid)

    def started() -> bool:
        check_alive(workers)
        return entries_read(r, keys, shards) > base

    t0 = deadline_wait(started, timeout, "the first read", poll=0.002)
    cpu0 = cpu()

    def idle() -> bool:
        check_alive(workers)
        return is_idle(r, keys, counts)

    t1 = deadline_wait(idle, timeout, "idle", poll=0.01)
    cpu1 = cpu()
    return Window(t0, t1, cpu1[0] - cpu0[0], cpu1[1] - cpu0[1])


def owners(r: redis.Redis, keys: Keys, shards: list[str]) -> dict[str, str | None]:
    """The worker id holding each shard's lease (None: no lease)."""
    vals = r.mget([keys.lease(s) for s in shards])
    leases = (parse_lease(v) for v in vals)
    return {
        s: (None if lease is None else lease.owner) for s, lease in zip(shards, leases, strict=True)
    }


def wait_settled(
    r: redis.Redis, keys: Keys, counts: ShardCounts, members: list[str], timeout: float
) -> None:
    """Every shard leased by the owner the rendezvous assignment gives it over ``members``."""
    shards = counts.all_shards()
    want = assign(shards, members)

    def settled() -> bool:
        live = sorted(ids.text(m) for m in r.zrange(keys.workers, 0, -1))
        return live == sorted(members) and owners(r, keys, shards) == want

    deadline_wait(settled, timeout, f"{len(members)} workers to settle ownership", poll=0.02)


def start_settled(
    env: BenchEnv, ns: str, keys: Keys, counts: ShardCounts, n: int, extra: dict[str, str]
) -> tuple[LocalFleet, list[WorkerProc]]:
    fleet = env.fleet(ns, extra)
    workers = [fleet.start() for _ in range(n)]
    wait_settled(env.client, keys, counts, [w.worker_id for w in workers], timeout=60)
    return fleet, workers


# ---- producing -------------------------------------------------------------------------
def publish(
    r: redis.Redis, keys: Keys, counts: ShardCounts, events: Iterable[ExternalEvent]
) -> int:
    return Producer(r, keys, counts).publish(events)


def append_to_logs(
    r: redis.Redis, keys: Keys, counts: ShardCounts, events: Iterable[ExternalEvent]
) -> int:
    """Put ``events`` straight into their shards' logs (``via inbox``, ids from Redis), as the
    owners' moves out of the inboxes leave them: for consumers that read the streams
    themselves (the baselines, the reference loop) and tests that need a log without a
    worker. Returns how many."""
    seqs: dict[str, int] = {}
    pipe = r.pipeline(transaction=False)
    for i, ev in enumerate(events, start=1):
        dest = destination(ev, counts)
        seqs[dest] = seqs.get(dest, 0) + 1
        text = encode(ev, "p:logged", seqs[dest])
        pipe.xadd(keys.events(dest), {EVENT_FIELD: text, VIA_FIELD: VIA_INBOX})
        if i % 1000 == 0:
            pipe.execute()
    pipe.execute()
    return sum(seqs.values())


def log_events(w: WorkerProc, name: str) -> list[dict[str, Any]]:
    """The worker's JSON log lines whose ``event`` is ``name``."""
    out = []
    with contextlib.suppress(OSError), open(w.log_path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if f'"{name}"' not in line:
                continue
            with contextlib.suppress(ValueError):
                doc = json.loads(line)
                if doc.get("event") == name:
                    out.append(doc)
    return out


def stage(env: BenchEnv, keys: Keys, counts: ShardCounts, events: Iterable[ExternalEvent]) -> Keys:
    """Publish ``events`` into a staging namespace beside ``keys`` (same hash tags)."""
    staged = env.namespace(f"{keys.ns}-staged", counts)
    publish(env.client, staged, counts, events)
    return staged


def swap_in(env: BenchEnv, staged: Keys, keys: Keys, counts: ShardCounts) -> None:
    """Make a staged backlog every shard's inbox at once (RENAME in one MULTI).

    The staged streams (empty, with their own ``workers`` group at 0) and inboxes replace
    the live ones, so running workers see the whole backlog appear between two reads: the
    figure is their steady-state rate of moving entries from the inbox into the log and
    applying them, with no start-up, rebalancing or producer in it.
    """
    pipe = env.client.pipeline(transaction=True)
    for s in counts.all_shards():
        pipe.rename(staged.events(s), keys.events(s))
        pipe.rename(staged.inbox(s), keys.inbox(s))
    pipe.execute()
    env.client.delete(staged.meta)


# ---- the machine -----------------------------------------------------------------------
def _pkg(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


def _cpu_model() -> str:
    try:
        out = subprocess.run(
            ["lscpu"], capture_output=True, text=True, timeout=10, check=False
        ).stdout
    except (OSError, subprocess.SubprocessError):
        out = ""
    for line in out.splitlines():
        if line.startswith("Model name:"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def machine_info(r: redis.Redis, redis_args: list[str]) -> dict[str, Any]:
    info: Any = r.info("server")
    return {
        "cpus": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "redis_server": info.get("redis_version"),
        "redis_args": redis_args,
        "redis_py": _pkg("redis"),
        "hiredis": _pkg("hiredis"),
        "pydantic": _pkg("pydantic"),
        "pydantic_core": _pkg("pydantic_core"),
        "eventfleet": _pkg("eventfleet"),
    }


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux ``/proc``; 0.0 elsewhere)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat.rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_mb(pid: int) -> float:
    """The process's resident-set high-water mark so far (VmHWM), in MiB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0
