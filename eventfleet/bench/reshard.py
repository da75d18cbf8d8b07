"""Online resharding under load (scenario n): what producers and orders see while a live
namespace grows 4+4 -> 8+8 under worker processes (docs/DESIGN-DECISIONS.md, section 35), on
a throwaway single Redis and on a throwaway 3-master Redis Cluster.

Two paced producers publish a mixed workload from threads, one that never re-reads the counts
(everything it sends for a moved key is forwarded by the parent) and one that learns them (its
first direct seqs to a child start above its parent's). Some seconds in, the reshard's steps
run (``reshard_online.grow``: record, new shards, markers, every child seeded, counts
published); the load goes on some seconds more, then the fleet is waited idle and every order
must have exactly one outcome. Three figures, each during the reshard (from its start to
``TAIL_S`` after it returned: the learning producer switches within that) against the same
figure before it:

- *no writes*: per shard, the longest time a producer's write to its inbox waited to be
  accepted (``longest_unaccepted``: a push blocked, or refused until the next one went
  through), the largest over the shards;
- *waiting for its owner*: per order, its publish (the producer's clock, just before the
  push) to its outcome entry (the id Redis gave it), the longest: the inbox, both hops of
  the saga, and for a moved key the parent's forward and the child's takeover;
- *throughput*: order outcomes per second in windows of ``WINDOW_S``, the lowest window
  during the reshard against the median window before it.

The same after the tail, to the end of the load (the fleet caught up or not), and the
workers' and Redis' CPU in each period. Redis runs on this host, so the producer's clock and
the entry ids are the same clock.
"""

from __future__ import annotations

import shutil
import statistics
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from eventfleet.bench.cluster import Backend
from eventfleet.bench.env import BenchError, check_alive, cpu_seconds, deadline_wait
from eventfleet.bench.handover import wait_settled
from eventfleet.ledger.codec import decode_outcome
from eventfleet.ledger.events import ExternalEvent, Order
from eventfleet.ledger.shards import ShardCounts
from eventfleet.local.fleet import LocalFleet
from eventfleet.ops.reshard_online import Run, grow
from eventfleet.ops.status import is_idle
from eventfleet.producer.client import Producer
from eventfleet.producer.workload import mixed
from eventfleet.store import ids
from eventfleet.store.keys import Keys
from eventfleet.store.namespace import init_namespace

FROM = ShardCounts(4, 4)
TO = ShardCounts(8, 8)
WINDOW_S = 0.5
"""Throughput windows."""
WARMUP_S = 1.0
"""Left out of the figures before the reshard: the fleet's first reads."""
LEARN_EVERY_S = 1.0
"""How often the learning producer re-reads the counts."""
TAIL_S = LEARN_EVERY_S + 1.0
"""After the reshard returned, still counted as during it."""


@dataclass(frozen=True)
class Push:
    """One chunk's push: wall-clock start and end, the shards it went to, accepted or not."""

    t0: float
    t1: float
    shards: frozenset[str]
    ok: bool


class Pusher(threading.Thread):
    """Publishes ``events`` at ``rate`` events/s in chunks of ``chunk``, noting every push and
    when each order was published. ``learn_every_s``: how often it re-reads the counts
    (``Producer.learn_counts``, between chunks)."""

    def __init__(
        self,
        r: redis.Redis,
        keys: Keys,
        counts: ShardCounts,
        events: Iterator[ExternalEvent],
        *,
        rate: float,
        chunk: int,
        learn_every_s: float,
        name: str,
    ) -> None:
        super().__init__(name=name, daemon=True)
        self.producer = Producer(r, keys, counts, counts_every_s=learn_every_s)
        self.events = events
        self.rate = rate
        self.chunk = chunk
        self.pushes: list[Push] = []
        self.placed: dict[str, float] = {}
        """Order id -> when it was published (wall clock, seconds)."""
        self.refused: list[str] = []
        self.error: str | None = None
        self.stop = threading.Event()

    def run(self) -> None:
        start, sent = time.monotonic(), 0
        try:
            while not self.stop.is_set():
                due = (time.monotonic() - start) * self.rate
                if due - sent < self.chunk:
                    self.stop.wait((sent + self.chunk - due) / self.rate)
                    continue
                self.push([next(self.events) for _ in range(self.chunk)])
                sent += self.chunk
        except Exception as exc:  # reported by the caller, which must still clean up
            self.error = f"{type(exc).__name__}: {str(exc)[:300]}"

    def push(self, batch: list[ExternalEvent]) -> None:
        p = self.producer
        p.learn_counts()
        stamped = [p.stamp(ev) for ev in batch]
        shards = frozenset(inbox.split(":")[1].strip("{}") for inbox, _ in stamped)
        t0 = time.time()
        try:
            p.send(stamped)
            ok = True
        except Exception as exc:  # noted: a refused push is what the figure is about
            self.refused.append(f"{type(exc).__name__}: {str(exc)[:200]}")
            ok = False
        t1 = time.time()
        self.pushes.append(Push(t0, t1, shards, ok))
        if ok:
            self.placed.update((ev.order_id, t0) for ev in batch if isinstance(ev, Order))


def longest_unaccepted(pushes: list[Push], t0: float, t1: float) -> dict[str, float]:
    """Per shard, the longest time a write to it waited to be accepted, for the writes begun
    in [t0, t1) (seconds): an accepted push's own time, or, for a refused one, from its start
    to the end of the next accepted push to the shard (to the last push's end when none
    was). Every push goes to all its inboxes in one round trip, so a shard that blocks
    shows in the push's time."""
    ordered = sorted(pushes, key=lambda p: p.t0)
    last = max((p.t1 for p in ordered), default=t1)
    out: dict[str, float] = {}
    for k, p in enumerate(ordered):
        if not t0 <= p.t0 < t1:
            continue
        for s in p.shards:
            end = p.t1
            if not p.ok:
                end = next((q.t1 for q in ordered[k + 1 :] if q.ok and s in q.shards), last)
            out[s] = max(out.get(s, 0.0), end - p.t0)
    return out


def per_window(times_s: list[float], t0: float, t1: float) -> list[float]:
    """Counts per second in the whole windows of ``WINDOW_S`` from ``t0`` to ``t1``."""
    n = int((t1 - t0) / WINDOW_S)
    counts = [0] * n
    for t in times_s:
        k = int((t - t0) / WINDOW_S)
        if 0 <= k < n:
            counts[k] += 1
    return [c / WINDOW_S for c in counts]


def outcome_times(r: redis.Redis, keys: Keys, counts: ShardCounts) -> dict[str, list[float]]:
    """Order id -> the times (seconds) of its outcome entries, over every user shard."""
    out: dict[str, list[float]] = {}
    for n in range(counts.users):
        start = "-"
        while True:
            got: Any = r.xrange(keys.outcomes(f"u{n}"), min=start, max="+", count=5000)
            for eid, fields in got:
                oid = decode_outcome(fields[b"outcome"]).order_id
                out.setdefault(oid, []).append(ids.millis(eid) / 1000)
            after = ids.after_range(got[-1][0]) if got else None
            if len(got) < 5000 or after is None:
                break
            start = after
    return out


@dataclass(frozen=True)
class Timeline:
    """Wall-clock seconds: the load began, the reshard began, ``TAIL_S`` after it returned,
    the load stopped."""

    load0: float
    begin: float
    end: float
    stopped: float


def figures(
    pushers: list[Pusher], outcomes: dict[str, list[float]], tl: Timeline
) -> dict[str, Any]:
    """The three figures, during [begin, end) against before [load0 + WARMUP_S, begin), and
    the throughput and waits after it, [end, stopped): whether the fleet caught up."""
    begin, end = tl.begin, tl.end
    pushes = [p for x in pushers for p in x.pushes]
    placed = {oid: t for x in pushers for oid, t in x.placed.items()}
    lost = sorted(oid for oid in placed if oid not in outcomes)
    twice = sorted(oid for oid, ts in outcomes.items() if oid in placed and len(ts) > 1)
    if lost or twice:
        raise BenchError(
            f"orders without an outcome: {lost[:5]} ({len(lost)}), "
            f"decided more than once: {twice[:5]} ({len(twice)})"
        )
    before = tl.load0 + WARMUP_S
    gaps_before = longest_unaccepted(pushes, before, begin)
    gaps_during = longest_unaccepted(pushes, begin, end)
    waits = {oid: outcomes[oid][0] - t for oid, t in placed.items()}

    def longest_wait(t0: float, t1: float) -> float:
        return max((w for oid, w in waits.items() if t0 <= placed[oid] < t1), default=0.0)

    decided = [ts[0] for oid, ts in outcomes.items() if oid in placed]
    rates_before = per_window(decided, before, begin)
    rates_during = per_window(decided, begin, end)
    rates_after = per_window(decided, end, tl.stopped)
    if not rates_before or not rates_during:
        raise BenchError("too short a load for a throughput window before and during")
    median = statistics.median(rates_before)
    worst = max(gaps_during, key=lambda s: gaps_during[s])
    return {
        "orders": len(placed),
        "pushes": len(pushes),
        "refused_pushes": sum(not p.ok for p in pushes),
        "refused": [r for x in pushers for r in x.refused][:5],
        "gap_before_ms": round(1000 * max(gaps_before.values(), default=0.0), 1),
        "gap_during_ms": round(1000 * gaps_during[worst], 1),
        "gap_during_shard": worst,
        "wait_before_ms": round(1000 * longest_wait(before, begin), 1),
        "wait_during_ms": round(1000 * longest_wait(begin, end), 1),
        "median_before_per_s": round(median, 1),
        "lowest_during_per_s": round(min(rates_during), 1),
        "dip_ratio": round(min(rates_during) / median, 3) if median else 0.0,
        "windows_during_per_s": [round(x, 1) for x in rates_during],
        "wait_after_ms": round(1000 * longest_wait(end, tl.stopped), 1),
        "median_after_per_s": round(statistics.median(rates_after), 1) if rates_after else 0.0,
        "windows_after_per_s": [round(x, 1) for x in rates_after],
    }


@dataclass(frozen=True)
class Load:
    """Mixed events/s offered in all, and seconds of it before and after the reshard."""

    rate: float
    before_s: float
    after_s: float


def on_backend(
    kind: str,
    load: Load,
    redis_args: list[str] | None = None,
    workers: int = 2,
    worker_env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """``reshard_under_load`` on a throwaway single Redis or 3-master cluster (``kind``) of
    its own, under ``workers`` worker processes (the shipped settings, or ``worker_env``)."""
    workdir = Path(tempfile.mkdtemp(prefix=f"ef-reshard-{kind}-"))
    b = Backend(kind, workdir, redis_args)
    env = {"EVENTFLEET_LOG_LEVEL": "info", **(worker_env or {})}
    fleet = LocalFleet(b.url, "bench-n", workdir / "logs", env=env, name=f"n{kind[0]}-w")
    try:
        return reshard_under_load(b, fleet, load, workers) | {"backend": kind}
    finally:
        fleet.stop_all(timeout=15)
        b.close()
        shutil.rmtree(workdir, ignore_errors=True)


def both(load: Load, redis_args: list[str] | None = None) -> dict[str, Any]:
    """Both backends, for ``eventfleet bench``: the single Redis' fields as they are, the
    cluster's prefixed ``cluster_``, each run whole under ``runs``."""
    single = on_backend("single", load, redis_args)
    cluster = on_backend("cluster", load, redis_args)
    flat = {k: v for k, v in cluster.items() if isinstance(v, int | float | str)}
    return single | {f"cluster_{k}": v for k, v in flat.items()} | {"runs": [single, cluster]}


def reshard_under_load(b: Backend, fleet: LocalFleet, load: Load, workers: int) -> dict[str, Any]:
    """``FROM`` -> ``TO`` under ``workers`` of ``fleet`` and two producers at ``load.rate``
    events/s in all, ``load.before_s`` seconds of load before the reshard and
    ``load.after_s`` after."""
    keys = Keys("bench-n")
    init_namespace(b.r, keys, FROM)
    procs = [fleet.start() for _ in range(workers)]
    wait_settled(b, keys, [w.worker_id for w in procs], 60, FROM)
    rate = load.rate
    chunk = max(10, int(rate / 40))  # each producer pushes every 1/20 s
    users, items = 10_000, 1_000
    pushers = [
        Pusher(
            b.r,
            keys,
            FROM,
            mixed(10**9, seed=7 + n, users=users, items=items, prefix=name),
            rate=rate / 2,
            chunk=chunk,
            learn_every_s=every,
            name=f"bench-n-{name}",
        )
        for n, (name, every) in enumerate((("stale", 10.0**9), ("learner", LEARN_EVERY_S)))
    ]
    pids = b.pids()
    cpu = [_cpu(procs, pids)]
    load0 = time.time()
    for p in pushers:
        p.start()
    try:
        wait = load.before_s
        deadline_wait(lambda: _alive(procs, wait, load0), wait + 30, "the load before")
        cpu.append(_cpu(procs, pids))
        begin = time.time()
        run = Run(b.r, keys)
        run.take()
        try:
            grow(run, TO.users, TO.items, wait_s=120)
        finally:
            run.release()
        returned = time.time()
        deadline_wait(lambda: _alive(procs, TAIL_S, returned), TAIL_S + 30, "the tail")
        cpu.append(_cpu(procs, pids))
        wait = load.after_s
        deadline_wait(lambda: _alive(procs, wait, returned), wait + 30, "the load after")
        cpu.append(_cpu(procs, pids))
    finally:
        for p in pushers:
            p.stop.set()
        for p in pushers:
            p.join(30)
        stopped = time.time()

    def idle() -> bool:
        check_alive(procs)
        return is_idle(b.r, keys, TO)

    failed = [p.error for p in pushers if p.error]
    if failed:
        raise BenchError(f"a producer failed: {failed[0]}")
    deadline_wait(idle, 120, "idle after the reshard", poll=0.05)
    tl = Timeline(load0, begin, returned + TAIL_S, stopped)
    out = figures(pushers, outcome_times(b.r, keys, TO), tl)
    return out | {
        "from": f"{FROM.users}+{FROM.items}",
        "to": f"{TO.users}+{TO.items}",
        "workers": workers,
        "offered_per_s": rate,
        "reshard_s": round(returned - begin, 3),
        "window_s": WINDOW_S,
        **_utilization(cpu, [load0, begin, tl.end, stopped], workers),
        "tail_s": TAIL_S,
    }


def _cpu(procs: list[Any], redis_pids: list[int]) -> tuple[float, float]:
    return (
        sum(cpu_seconds(w.proc.pid) for w in procs),
        sum(cpu_seconds(p) for p in redis_pids),
    )


def _utilization(cpu: list[tuple[float, float]], at: list[float], workers: int) -> dict[str, float]:
    """The workers' CPU per worker and Redis' CPU, as a share of one core, in each period."""
    out = {}
    for k, period in enumerate(("before", "during", "after")):
        s = max(at[k + 1] - at[k], 1e-9)
        out[f"worker_cpu_{period}"] = round((cpu[k + 1][0] - cpu[k][0]) / s / workers, 2)
        out[f"redis_cpu_{period}"] = round((cpu[k + 1][1] - cpu[k][1]) / s, 2)
    return out


def _alive(procs: list[Any], seconds: float, since: float) -> bool:
    check_alive(procs)
    return time.time() - since >= seconds
