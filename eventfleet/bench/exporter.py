"""The exporter's cost (figure x): one pass over a namespace of 1,024 shards (512 user, 512
item), with a backlog on every shard, some pending entries and dead letters, and no worker
(the worst case: every shard needs the extra read of its oldest undelivered entry).

Timed in-process with the exporter's own ``NamespaceReader`` and rendering: the wall time
of a pass, Redis's CPU time spent on it (``INFO cpu``), the commands it sent (``INFO
commandstats``), and the size of the ``/metrics`` answer it yields.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

from eventfleet.bench.env import BenchEnv
from eventfleet.exporter.read import NamespaceReader
from eventfleet.exporter.serve import Exporter
from eventfleet.ledger.events import AddItem, Topup
from eventfleet.ledger.shards import ShardCounts
from eventfleet.producer.client import Producer
from eventfleet.store.keys import GROUP, Keys

COUNTS = ShardCounts(512, 512)
PER_SHARD = 20


def _commands(r: Any) -> int:
    stats: dict[str, Any] = r.info("commandstats")
    return sum(int(v["calls"]) for v in stats.values())


def _redis_cpu_s(r: Any) -> float:
    cpu: dict[str, Any] = r.info("cpu")
    return float(cpu["used_cpu_sys"]) + float(cpu["used_cpu_user"])


def exporter_pass(env: BenchEnv, passes: int) -> dict[str, Any]:
    r = env.client
    keys = env.namespace("bench-exporter", COUNTS)
    events: list[Topup | AddItem] = [
        Topup(user_id=u, amount=1) for u in range(1, COUNTS.users * PER_SHARD + 1)
    ]
    events += [
        AddItem(item_id=f"item-{i}", count=1, price=1) for i in range(COUNTS.items * PER_SHARD)
    ]
    Producer(r, keys, COUNTS).publish(events)
    for shard in COUNTS.all_shards()[::8]:  # some pending entries and dead letters
        r.xreadgroup(GROUP, "bench-reader", {keys.events(shard): ">"}, count=2)
        r.xadd(keys.dlq(shard), {"reason": "bad_json"})
    reader = NamespaceReader(r, Keys(keys.ns))
    reader.read()  # the first pass counts every dead letter; later ones only new ones
    exporter = Exporter(reader, keys.ns, interval_s=0.0)
    walls: list[float] = []
    cpu_before, commands_before = _redis_cpu_s(r), _commands(r)
    body = b""
    for _ in range(passes):
        t0 = time.perf_counter()
        body = exporter.exposition()
        walls.append(time.perf_counter() - t0)
    cpu_s = _redis_cpu_s(r) - cpu_before
    # each INFO call above counts as one command too: two per measurement, not per pass
    commands = (_commands(r) - commands_before - 2) / passes
    assert exporter.last_ok
    env.drop(keys)
    return {
        "shards": len(COUNTS.all_shards()),
        "passes": passes,
        "pass_p50_ms": round(statistics.median(walls) * 1000, 1),
        "pass_max_ms": round(max(walls) * 1000, 1),
        "redis_cpu_ms_per_pass": round(cpu_s * 1000 / passes, 1),
        "commands_per_pass": round(commands),
        "exposition_kb": round(len(body) / 1024, 1),
    }
