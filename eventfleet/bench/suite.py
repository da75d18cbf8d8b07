"""``eventfleet bench``: every performance figure of the fleet, measured in one run on one
throwaway redis-server so the figures are comparable.

Scenarios (docs/PERFORMANCE.md explains each and what limits it):

a. producer: ``produce file``'s code path (validate the whole file, publish pipelined);
b. one worker applying pre-loaded top-ups over 16 user shards, first read to idle;
c. the same with two workers;
d. a mixed workload with orders, two workers, until every saga step has settled;
e. the naive consumer (COUNT 1, XACK per entry) on b's entries;
f. the bare batched loop (COUNT n, json.loads, one XACK per shard batch) on b's entries;
g. order latency (entry to outcome, both saga hops) at a fixed offered load;
h. failover: SIGKILL one of four workers (20 times, a replacement joining after each), time
   until its shards apply again under new owners;
s. warm standbys: entries replayed per takeover after a SIGKILL under load, standbys on and
   off; c and d with standbys on and off, and the workers' peak RSS;
i. snapshot write and restore of one shard with a million users, and the worker's peak RSS;
k. a settled order workload (set-up events, then orders) with 1 and 2 workers, against the
   at-least-once loop a team would write by hand with 1 and 2 processes
   (``eventfleet.bench.orders``, ``eventfleet.bench.loop_mixed``);
j. the mixed workload with 1 and 2 workers on a single Redis and on a throwaway 3-master
   Redis Cluster, entries per second (``eventfleet.bench.cluster``, docs/SCALING.md);
x. one pass of ``eventfleet exporter`` over 1,024 shards with a backlog on each: wall time,
   Redis CPU, commands, size of the answer (``eventfleet.bench.exporter``);
p. publishing with the client: ``eventfleet.Client`` and ``eventfleet.aio.Client``
   ``publish_many`` against a's ``produce file`` path in alternating rounds of the same run,
   and one event per call (``eventfleet.bench.client``);
r. ``client.balance(user)`` latency p50/p99 with 1,000,000 users on one shard (written by a
   worker) and 50 concurrent readers, threads with the sync client and asyncio tasks with the
   asyncio client, against the fold-based read of ``eventfleet state user``;
m. the read model's memory per user, item and order (``MEMORY USAGE`` of the model hashes
   after a worker applied 100,000 of each);
o. calm scaling: each moved shard's time without an owner when 2 workers scale to 4 and
   back under a paced load, single Redis and 3-master cluster (``eventfleet.bench.handover``);
w. the HTTP API (``eventfleet api``, one process) against ``eventfleet.aio.Client`` on the same
   machine: top-ups and orders with ``wait``, requests/s, p50 and p99 (``eventfleet.bench.api``);
n. online resharding 4+4 -> 8+8 under two workers and a paced load, on a single Redis and on
   a throwaway 3-master cluster: the longest time a shard accepted no writes, the longest
   wait of an order for its owner, the lowest throughput window, each during the reshard
   against before it (``eventfleet.bench.reshard``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from eventfleet.bench import api as bench_api
from eventfleet.bench import client as bench_client
from eventfleet.bench import cluster as bench_cluster
from eventfleet.bench import exporter as bench_exporter
from eventfleet.bench import failover as bench_failover
from eventfleet.bench import handover as bench_handover
from eventfleet.bench import orders as bench_orders
from eventfleet.bench import reshard as bench_reshard
from eventfleet.bench import runs as bench_runs
from eventfleet.bench import snapshot as bench_snapshot
from eventfleet.bench import standby as bench_standby
from eventfleet.bench.env import BenchEnv, Say, load, machine_info

SCENARIOS = ("a", "b", "c", "d", "k", "g", "h", "s", "i", "j", "x", "p", "r", "m", "o", "w", "n")
"""Runnable groups; ``b`` also runs e and f on its data."""
FORMAT = 1


@dataclass(frozen=True)
class Figure:
    key: str
    label: str
    unit: str
    scenario: str
    field: str
    op: str = ""
    limit: float | str | None = None
    """A number, or the name of a field of the same scenario that holds it."""

    def value(self, scen: dict[str, Any]) -> float | None:
        v = scen.get(self.scenario, {}).get(self.field)
        return None if v is None else float(v)

    def target(self, scen: dict[str, Any]) -> float | None:
        if isinstance(self.limit, str):
            return float(scen[self.scenario][self.limit])
        return self.limit

    def met(self, v: float, scen: dict[str, Any]) -> bool | None:
        limit = self.target(scen)
        if limit is None:
            return None
        return v >= limit if self.op == ">=" else v <= limit


FIGURES: tuple[Figure, ...] = (
    Figure("a", "produce file (validate + send)", "events/s", "a", "events_per_s", ">=", 150_000),
    Figure("a.send", "produce file: sending alone", "events/s", "a", "publish_per_s"),
    Figure("b", "apply, 1 worker", "events/s", "b", "events_per_s", ">=", 100_000),
    Figure("c", "apply, 2 workers", "events/s", "c", "events_per_s"),
    Figure("d", "mixed + sagas settled, 2 workers", "events/s", "d", "events_per_s"),
    Figure("k.ef1", "orders settled, 1 worker", "events/s", "k", "eventfleet_1w"),
    Figure("k.ef2", "orders settled, 2 workers", "events/s", "k", "eventfleet_2w"),
    Figure("k.loop1", "at-least-once loop, 1 process", "events/s", "k", "loop_1w"),
    Figure("k.loop2", "at-least-once loop, 2 processes", "events/s", "k", "loop_2w"),
    Figure("k.r1", "orders: worker / loop, 1 each", "ratio", "k", "ratio_1w", ">=", 1.0),
    Figure("k.r2", "orders: worker / loop, 2 each", "ratio", "k", "ratio_2w", ">=", 1.0),
    Figure("e", "naive consumer (COUNT 1)", "events/s", "e", "events_per_s"),
    Figure("f", "bare batched loop", "events/s", "f", "events_per_s"),
    Figure("b/f", "worker / bare loop", "ratio", "ratios", "b/f", ">=", 0.6),
    Figure("b/e", "worker / naive", "ratio", "ratios", "b/e", ">=", 15),
    Figure("g.p50", "order latency p50", "ms", "g", "p50_ms"),
    Figure("g.p99", "order latency p99", "ms", "g", "p99_ms", "<=", 25),
    Figure("g.max", "order latency max", "ms", "g", "max_ms"),
    Figure("h.p50", "failover p50 (kill -> first apply)", "s", "h", "p50_s", "<=", "target_s"),
    Figure("h.max", "failover max (kill -> first apply)", "s", "h", "max_s", "<=", "target_s"),
    Figure("h.all", "failover max, every shard applying", "s", "h", "all_shards_max_s"),
    Figure(
        "s.on", "replayed per takeover, standbys", "entries", "s", "replayed_max_on", "<=", 1000
    ),
    Figure("s.off", "replayed per takeover, none", "entries", "s", "replayed_max_off"),
    Figure("s.c1", "c (2 workers), standbys on", "events/s", "s", "c_on_per_s"),
    Figure("s.c0", "c (2 workers), standbys off", "events/s", "s", "c_off_per_s"),
    Figure("s.d1", "d (mixed), standbys on", "events/s", "s", "d_on_per_s"),
    Figure("s.d0", "d (mixed), standbys off", "events/s", "s", "d_off_per_s"),
    Figure("s.rss1", "worker peak RSS, standbys on", "MB", "s", "rss_on_mb"),
    Figure("s.rss0", "worker peak RSS, standbys off", "MB", "s", "rss_off_mb"),
    Figure("i.write", "snapshot write (1 shard)", "s", "i", "write_s", "<=", 2),
    Figure("i.restore", "snapshot restore", "s", "i", "restore_s", "<=", 2),
    Figure("i.size", "snapshot size", "MB", "i", "snapshot_mb"),
    Figure("i.rss", "worker peak RSS", "MB", "i", "peak_rss_mb", "<=", 300),
    Figure("j.s1", "mixed, 1 worker, single Redis", "events/s", "j", "single_1w_events"),
    Figure("j.s2", "mixed, 2 workers, single Redis", "events/s", "j", "single_2w_events"),
    Figure("j.c1", "mixed, 1 worker, 3-master cluster", "events/s", "j", "cluster_1w_events"),
    Figure("j.c2", "mixed, 2 workers, 3-master cluster", "events/s", "j", "cluster_2w_events"),
    Figure("j.r1", "mixed, 1 worker: cluster / single", "ratio", "j", "ratio_1w", ">=", 0.9),
    Figure("j.r2", "mixed, 2 workers: cluster / single", "ratio", "j", "ratio_2w", ">=", 0.9),
    Figure("x.p50", "exporter pass, 1,024 shards, p50", "ms", "x", "pass_p50_ms"),
    Figure("x.max", "exporter pass, 1,024 shards, max", "ms", "x", "pass_max_ms"),
    Figure("x.cpu", "exporter pass: Redis CPU", "ms", "x", "redis_cpu_ms_per_pass"),
    Figure("x.cmds", "exporter pass: Redis commands", "commands", "x", "commands_per_pass"),
    Figure("x.kb", "exporter /metrics answer", "KiB", "x", "exposition_kb"),
    Figure("p.file", "produce file path, in p's rounds", "events/s", "p", "produce_file_per_s"),
    Figure("p.sync", "Client.publish_many (dicts)", "events/s", "p", "sync_per_s"),
    Figure("p.aio", "aio.Client.publish_many (dicts)", "events/s", "p", "aio_per_s"),
    Figure("p.rs", "Client / produce file", "ratio", "p", "sync_vs_file", ">=", 1.0),
    Figure("p.ra", "aio.Client / produce file", "ratio", "p", "aio_vs_file", ">=", 1.0),
    Figure("p.one", "Client.topup, one per call", "events/s", "p", "one_call_sync_per_s"),
    Figure("p.aone", "aio.Client.topup, one per call", "events/s", "p", "one_call_aio_per_s"),
    Figure("r.1p50", "balance p50, one reader (sync)", "ms", "r", "alone_p50_ms"),
    Figure("r.1p99", "balance p99, one reader (sync)", "ms", "r", "alone_p99_ms"),
    Figure("r.p50", "balance p50, 50 threads (sync)", "ms", "r", "threads_p50_ms"),
    Figure("r.p99", "balance p99, 50 threads (sync)", "ms", "r", "threads_p99_ms", "<=", 5),
    Figure("r.rps", "balance reads, 50 threads (sync)", "reads/s", "r", "threads_reads_per_s"),
    Figure("r.ap50", "balance p50, 50 asyncio tasks", "ms", "r", "tasks_p50_ms"),
    Figure("r.ap99", "balance p99, 50 asyncio tasks", "ms", "r", "tasks_p99_ms", "<=", 5),
    Figure("r.arps", "balance reads, 50 asyncio tasks", "reads/s", "r", "tasks_reads_per_s"),
    Figure("r.p99p", "balance p99, 50 threads, paced", "ms", "r", "threads_paced_p99_ms"),
    Figure("r.ap99p", "balance p99, 50 tasks, paced", "ms", "r", "tasks_paced_p99_ms"),
    Figure("r.fold", "fold read (state user), snapshot", "s", "r", "fold_snapshot_s"),
    Figure("r.foldrun", "fold read, owner running", "s", "r", "fold_running_s"),
    Figure("r.mb", "read model hash, all users", "MB", "r", "model_mb"),
    Figure("m.user", "read model per user", "bytes", "m", "bytes_per_user"),
    Figure("m.item", "read model per item", "bytes", "m", "bytes_per_item"),
    Figure("m.order", "read model per order", "bytes", "m", "bytes_per_order"),
    *(
        Figure(
            f"o.{b[0]}{w}{st}",
            f"unowned per move: {w}, {b}, {st}",
            "s",
            "o",
            f"{b}_{w}_unowned_{st}_s",
            "<=",
            "target_s",
        )
        for b in ("single", "cluster")
        for w in ("up", "down")
        for st in ("p50", "max")
    ),
    Figure("o.ready", "moved shard until read, max", "s", "o", "ready_max_s"),
    Figure("w.http", "HTTP API top-ups (1 process)", "req/s", "w", "http_topup_per_s"),
    Figure("w.client", "aio.Client top-ups, same callers", "req/s", "w", "client_topup_per_s"),
    Figure(
        "w.ratio", "top-ups: HTTP API / client", "ratio", "w", "http_vs_client_topups", ">=", 0.5
    ),
    Figure("w.p50", "HTTP top-up p50", "ms", "w", "http_topup_p50_ms"),
    Figure("w.p99", "HTTP top-up p99", "ms", "w", "http_topup_p99_ms"),
    Figure("w.cp99", "client top-up p99", "ms", "w", "client_topup_p99_ms"),
    Figure("w.ohttp", "HTTP orders ?wait=5", "req/s", "w", "http_order_per_s"),
    Figure("w.op50", "HTTP order ?wait=5 p50", "ms", "w", "http_order_p50_ms"),
    Figure("w.op99", "HTTP order ?wait=5 p99", "ms", "w", "http_order_p99_ms"),
    Figure("w.oclient", "client orders wait=5", "req/s", "w", "client_order_per_s"),
    Figure("w.ocp99", "client order wait=5 p99", "ms", "w", "client_order_p99_ms"),
    Figure("w.cpu", "API CPU per request", "ms", "w", "api_cpu_ms_per_request"),
    Figure("n.gap", "a shard took no writes, resharding", "ms", "n", "gap_during_ms"),
    Figure("n.gap0", "a shard took no writes, before", "ms", "n", "gap_before_ms"),
    Figure("n.wait", "order waits for owner, resharding", "ms", "n", "wait_during_ms"),
    Figure("n.wait0", "order waits for owner, before", "ms", "n", "wait_before_ms"),
    Figure("n.low", "orders decided, lowest window", "orders/s", "n", "lowest_during_per_s"),
    Figure("n.med", "orders decided, median before", "orders/s", "n", "median_before_per_s"),
    Figure("n.dip", "lowest window / median before", "ratio", "n", "dip_ratio"),
    Figure("n.s", "reshard 4+4 -> 8+8, all steps", "s", "n", "reshard_s"),
    Figure("n.cgap", "no writes, resharding, cluster", "ms", "n", "cluster_gap_during_ms"),
    Figure("n.cwait", "order waits, resharding, cluster", "ms", "n", "cluster_wait_during_ms"),
    Figure("n.cdip", "lowest / median before, cluster", "ratio", "n", "cluster_dip_ratio"),
    Figure("n.cs", "reshard steps, cluster", "s", "n", "cluster_reshard_s"),
)


def ratios(scen: dict[str, Any]) -> dict[str, float]:
    out = {}
    for num, den in (("b", "f"), ("b", "e")):
        a = scen.get(num, {}).get("events_per_s")
        b = scen.get(den, {}).get("events_per_s")
        if a and b:
            out[f"{num}/{den}"] = round(a / b, 2)
    return out


def run(*, quick: bool, only: tuple[str, ...], appendfsync: str, say: Say) -> dict[str, Any]:
    sizes = bench_runs.QUICK if quick else bench_runs.FULL
    redis_args = ["--appendfsync", appendfsync]
    started = datetime.now(UTC).isoformat(timespec="seconds")
    load_before = load()
    t_start = time.perf_counter()
    scen: dict[str, Any] = {}
    with BenchEnv(redis_args, say) as env:
        machine = machine_info(env.client, redis_args)
        batch = 1000

        def step(key: str, what: str, fn: Callable[[], dict[str, Any]]) -> None:
            if key not in only:
                return
            say(f"[{key}] {what} ...")
            t = time.perf_counter()
            scen[key] = fn() | {"load_after": load()}
            say(f"[{key}] done in {time.perf_counter() - t:.1f}s")

        step("a", "producer", lambda: bench_runs.producer_file(env, sizes.producer_events))
        if "b" in only:
            say("[b] one worker, then [e] naive and [f] bare loops on its data ...")
            res = bench_runs.one_worker(env, sizes.apply_events, sizes.naive_events, batch)
            scen.update(res)
        step(
            "c",
            "two workers",
            lambda: bench_runs.two_workers(env, "topups", sizes.apply_events),
        )
        step(
            "d",
            "mixed workload",
            lambda: bench_runs.two_workers(env, "mixed", sizes.mixed_events),
        )
        step(
            "k",
            "orders, eventfleet and the at-least-once loop",
            lambda: bench_orders.orders_vs_loop(env, sizes.order_setup, sizes.orders),
        )
        step(
            "g",
            "latency",
            lambda: bench_runs.latency(env, sizes.latency_rate, sizes.latency_seconds),
        )
        kills = 2 if quick else 20
        step("h", "failover", lambda: bench_failover.failover(env, sizes.failover_ttl_ms, kills))
        step(
            "s",
            "warm standbys: replay and cost",
            lambda: bench_standby.standby(
                env,
                sizes.failover_ttl_ms,
                1 if quick else 6,
                sizes.apply_events // (2 if quick else 1),
                sizes.mixed_events // (2 if quick else 1),
                1000.0 if quick else bench_standby.RATE,
            ),
        )
        step("i", "snapshot", lambda: bench_snapshot.snapshot(env, sizes.snapshot_users))
        step(
            "j",
            "single Redis and 3-master cluster",
            lambda: bench_cluster.scaling(
                5_000 if quick else 200_000, (1, 2), redis_args=redis_args
            ),
        )
        step("x", "exporter pass", lambda: bench_exporter.exporter_pass(env, 5 if quick else 20))
        step(
            "p",
            "client publish, sync and asyncio, against produce file",
            lambda: bench_client.publish_rates(
                env, sizes.producer_events, 1 if quick else 3, 500 if quick else 5_000
            ),
        )
        step(
            "r",
            "client reads against the fold, one shard",
            lambda: bench_client.read_latency(
                env, 20_000 if quick else 1_000_000, 50, 1.0 if quick else 10.0, 1 if quick else 3
            ),
        )
        step(
            "m",
            "read model memory",
            lambda: bench_client.model_memory(env, 2_000 if quick else 100_000),
        )
        step(
            "o",
            "calm scaling",
            lambda: bench_handover.handover(1 if quick else 3, redis_args=redis_args),
        )
        step(
            "w",
            "HTTP API against the asyncio client",
            lambda: bench_api.http_vs_client(
                env, 1_000 if quick else 20_000, 200 if quick else 4_000
            ),
        )
        step(
            "n",
            "online resharding under load",
            lambda: bench_reshard.both(
                bench_reshard.Load(400.0, 3.0, 3.0)
                if quick
                else bench_reshard.Load(2000.0, 10.0, 10.0),
                redis_args,
            ),
        )
    scen["ratios"] = ratios(scen)
    figures: dict[str, float] = {}
    targets: dict[str, dict[str, Any]] = {}
    for f in FIGURES:
        v = f.value(scen)
        if v is None:
            continue
        figures[f.key] = v
        met = f.met(v, scen)
        if met is not None:
            targets[f.key] = {"op": f.op, "target": f.target(scen), "met": met}
    return {
        "format": FORMAT,
        "quick": quick,
        "started": started,
        "seconds": round(time.perf_counter() - t_start, 1),
        "machine": machine,
        "load_before": load_before,
        "load_after": load(),
        "sizes": sizes.__dict__,
        "scenarios": scen,
        "figures": figures,
        "targets": targets,
    }


def table(doc: dict[str, Any]) -> str:
    """The results as a fixed-width table (also the one in docs/PERFORMANCE.md)."""
    m = doc["machine"]
    lines = [
        f"eventfleet bench{' --quick' if doc['quick'] else ''}  {doc['started']}  "
        f"{doc['seconds']}s",
        f"machine: {m['cpus']} cpus ({m['cpu_model']}), Python {m['python']}, "
        f"Redis {m['redis_server']} ({' '.join(m['redis_args'])}), redis-py {m['redis_py']}, "
        f"hiredis {m['hiredis']}; load {doc['load_before']} -> {doc['load_after']}",
        *(
            [
                "--quick: a smoke test. Its runs last a fraction of a second, too short to judge",
                "the targets (ratios move by 10-30% between quick runs); the full run judges them.",
            ]
            if doc["quick"]
            else []
        ),
        "",
        f"{'':<10} {'figure':<34} {'measured':>12}  {'unit':<9} {'target':<13} met",
    ]
    labels = {f.key: f for f in FIGURES}
    for key, v in doc["figures"].items():
        f = labels[key]
        t = doc["targets"].get(key)
        target = "" if t is None else f"{t['op']} {_num(t['target'])}"
        met = "" if t is None else ("yes" if t["met"] else "NO")
        lines.append(f"{key:<10} {f.label:<34} {_num(v):>12}  {f.unit:<9} {target:<13} {met}")
    return "\n".join(lines)


def _num(v: float) -> str:
    return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:g}"
