"""Observability, against live worker processes: the `/metrics` families and how they move,
`/healthz` and `/readyz` when Redis stops and when a worker is paused, structured logs, the
dashboard's PromQL against what a worker really exposes, and `status --json`.

Every worker here serves its endpoints on a free loopback port; the tests scrape and parse
`/metrics` with prometheus_client's own parser, as Prometheus would read it.
"""

from __future__ import annotations

import itertools
import json
import os
import pty
import re
import socket
import string
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
import redis
import yaml
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from eventfleet.local.fleet import LocalFleet, WorkerProc
from eventfleet.local.redisserver import LocalRedis, free_port
from eventfleet.ops.status import is_idle
from ledger.codec import encode
from ledger.events import EVENT_TYPES, AddItem, Order, Topup
from ledger.shards import ShardCounts, destination, user_shard
from ledger.state import ShardState
from producer.client import Producer
from producer.workload import mixed
from store.keys import EVENT_FIELD, GROUP, Keys
from tests.fleet_utils import (
    FAST,
    log_lines,
    make_fleet,
    owners,
    plant_crash_looping_entry,
    setup_namespace,
)
from tests.helpers import cli, cli_json, wait_for
from tests.test_deploy_static import (
    contract_metrics,
    dashboard_exprs,
    promql_metric_names,
    promtool_check,
)
from worker.assignment import assign
from worker.health import HealthState, serve
from worker.metrics import package_version
from worker.ownership import LAG_SAMPLE_S

DOC = Path(__file__).resolve().parents[1] / "docs" / "OBSERVABILITY.md"
PROMETHEUS_OWN = {"up"}  # series Prometheus writes itself, not a worker

# ---------------------------------------------------------------- scraping a worker

KIND_SUFFIXES = {
    "counter": ("_total",),
    "histogram": ("_bucket", "_sum", "_count"),
    "gauge": ("",),
}
# Every label a worker may put on an eventfleet_ series, and the values it may take: bounded
# sets, never an id (worker, order, user, item).
LABEL_VALUES = {
    "family": r"[ui]",
    "shard": r"[ui][0-9]{1,4}",
    "type": "|".join(EVENT_TYPES),
    "reason": r"[a-z]+(_[a-z]+)*",
    "status": r"confirmed|rejected",
    "operation": r"[a-z]+(_[a-z]+)*",
    "version": r"[0-9]+(\.[0-9]+)*([.+-][0-9A-Za-z.+-]+)?",
    "le": r"[0-9.e+-]+|\+Inf",
}


@dataclass
class Scrape:
    families: dict[str, Metric]

    @classmethod
    def parse(cls, text: str) -> Scrape:
        return cls({f.name: f for f in text_string_to_metric_families(text)})

    def samples(self, name: str) -> list[Sample]:
        return [s for f in self.families.values() for s in f.samples if s.name == name]

    def total(self, name: str, **labels: str) -> float:
        return sum(s.value for s in self.samples(name) if labels.items() <= s.labels.items())

    def by(self, name: str, label: str) -> dict[str, float]:
        out: dict[str, float] = {}
        for s in self.samples(name):
            out[s.labels[label]] = out.get(s.labels[label], 0.0) + s.value
        return out

    def nonzero(self, name: str, label: str) -> dict[str, float]:
        return {k: v for k, v in self.by(name, label).items() if v}

    def exposed_names(self) -> set[str]:
        """Every series name this exposition offers, by each family's type."""
        names: set[str] = set()
        for f in self.families.values():
            names.update(f.name + suffix for suffix in KIND_SUFFIXES.get(f.type, ("",)))
            names.update(s.name for s in f.samples)
        return names


def http_status(port: int, path: str, timeout: float = 2.0) -> int | None:
    """The HTTP status of ``path``; None when nothing answers in time."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        code = int(exc.code)
        exc.close()
        return code
    except (urllib.error.URLError, OSError):  # refused, reset or timed out
        return None


def scrape(port: int) -> Scrape:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        return Scrape.parse(resp.read().decode())


@dataclass
class Live:
    """A worker process and the port of its /metrics, /healthz and /readyz."""

    proc: WorkerProc
    port: int

    @property
    def id(self) -> str:
        return self.proc.worker_id

    def get(self, path: str, timeout: float = 2.0) -> int | None:
        return http_status(self.port, path, timeout)

    def scrape(self) -> Scrape:
        return scrape(self.port)

    def logs(self) -> list[dict[str, Any]]:
        return log_lines(self.proc)

    def assert_json_lines(self) -> None:
        """Every line the worker wrote is one JSON object: no stray traceback or print."""
        for line in self.proc.log_path.read_text().splitlines():
            assert line.startswith("{") and json.loads(line), f"not a JSON line: {line!r}"

    def events(self, name: str) -> list[dict[str, Any]]:
        return [e for e in self.logs() if e["event"] == name]


T = TypeVar("T")


def until(cond: Callable[[], T | None], timeout: float, what: str) -> T:
    """``wait_for`` for conditions that return a value once it holds, None before."""
    got = wait_for(cond, timeout, what)
    assert got is not None
    return got


def count_range(r: redis.Redis, stream: str, after: str, upto: str = "+") -> int:
    """Entries of ``stream`` after id ``after`` (exclusive) up to ``upto`` (inclusive)."""
    entries: Any = r.xrange(stream, min=f"({after}", max=upto)
    return len(entries)


def fleet_of_two(
    url: str, ns: str, tmp: Path, fleets: list[LocalFleet], counts: ShardCounts, **env: str
) -> LocalFleet:
    """A fleet whose first two workers both get shards. Worker ids embed this process's pid,
    and rendezvous hashing gives one of two members every one of 8 shards 1 time in 128."""
    pid = os.getpid()
    name = next(
        n
        for n in string.ascii_lowercase
        if len(set(assign(counts.all_shards(), [f"{n}1-{pid}", f"{n}2-{pid}"]).values())) == 2
    )
    fleet = LocalFleet(url, ns, tmp / "logs", env={**FAST, **env}, name=name)
    fleets.append(fleet)
    return fleet


def start(fleet: LocalFleet, **env: str) -> Live:
    port = free_port()
    proc = fleet.start({"EVENTFLEET_METRICS_PORT": str(port), **env})
    return Live(proc, port)


def wait_ready(w: Live, timeout: float = 30) -> None:
    wait_for(lambda: w.get("/readyz") == 200, timeout, f"{w.id} to report ready")


def wait_idle(r: redis.Redis, ns: str, counts: ShardCounts, timeout: float = 60) -> None:
    wait_for(lambda: is_idle(r, Keys(ns), counts), timeout, "the fleet to become idle")


def gauge_by_shard(w: Live, name: str) -> dict[str, float]:
    return w.scrape().by(name, "shard")


def check_contract_families(m: Scrape) -> None:
    for name, described in contract_metrics().items():
        kind = described.split()[0]  # "gauge (1)" is a gauge
        family = name.removesuffix("_total") if kind == "counter" else name
        assert family in m.families, f"{name} is not exposed"
        assert m.families[family].type == kind, (name, m.families[family].type)


def check_labels_bounded(m: Scrape, ids: set[str]) -> None:
    for f in m.families.values():
        if not f.name.startswith("eventfleet_"):
            continue
        for s in f.samples:
            assert not s.name.endswith("_created"), f"{s.name}: a series per child for nothing"
            for label, value in s.labels.items():
                assert label in LABEL_VALUES, f"{s.name} has an unexpected label {label!r}"
                assert re.fullmatch(LABEL_VALUES[label], value), (s.name, label, value)
                assert not any(i in value for i in ids), f"{s.name} carries an id: {value!r}"


# ---------------------------------------------------------------- the families move


def saga(counts: ShardCounts) -> list[Topup | AddItem | Order]:
    """Every order path once or twice: confirmed, insufficient funds, out of stock, unknown."""
    return [
        *(Topup(user_id=u, amount=1000) for u in range(1, 7)),
        AddItem(item_id="apple", count=5, price=100),
        AddItem(item_id="pear", count=1, price=5000),
        Order(order_id="o-1", user_id=1, item_id="apple", qty=2),  # confirmed
        Order(order_id="o-2", user_id=2, item_id="pear", qty=1),  # 5000 > 1000: released
        Order(order_id="o-3", user_id=3, item_id="apple", qty=10),  # out of stock
        Order(order_id="o-4", user_id=4, item_id="ghost", qty=1),  # unknown item
        Order(order_id="o-5", user_id=5, item_id="apple", qty=1),  # confirmed
    ]


def test_a_live_worker_exposes_every_contract_metric_and_they_move(
    r: redis.Redis,
    redis_server: LocalRedis,
    namespace: str,
    env: dict[str, str],
    tmp_path: Path,
    fleet_factory: list[LocalFleet],
) -> None:
    counts = setup_namespace(r, namespace)
    shards = set(counts.all_shards())
    keys = Keys(namespace)
    fleet = fleet_of_two(redis_server.url, namespace, tmp_path, fleet_factory, counts)
    a = start(fleet)
    wait_ready(a)
    m = a.scrape()
    check_contract_families(m)
    assert [(s.labels, s.value) for s in m.samples("eventfleet_build_info")] == [
        ({"version": package_version()}, 1.0)
    ]
    assert m.total("eventfleet_shards_owned") == len(shards)
    assert m.by("eventfleet_lease_acquisitions_total", "shard") == dict.fromkeys(shards, 1.0)
    assert m.total("eventfleet_recovery_duration_seconds_count") == len(shards)

    # A saga touching every order path, one (source, seq) sent twice, one malformed entry.
    Producer(r, keys, counts).publish(saga(counts))
    again = Topup(user_id=6, amount=1)
    dup_shard = destination(again, counts)
    for _ in range(2):
        r.xadd(keys.events(dup_shard), {EVENT_FIELD: encode(again, "p:resent", 1)})
    bad_shard = "i1"
    r.xadd(keys.events(bad_shard), {EVENT_FIELD: b"{oops"})
    entries = 13 + 6 + 2 + 1  # published, emitted by the worker (3 charges, 1 release, 2 rejects)
    wait_idle(r, namespace, counts)

    def settled() -> Scrape | None:
        m = a.scrape()
        return m if m.total("eventfleet_batch_size_sum") == entries else None

    m = until(settled, 10, "the last batch to be observed")
    assert m.nonzero("eventfleet_events_applied_total", "type") == {
        "topup": 7,
        "add_item": 2,
        "order": 5,
        "charge": 3,
        "release": 1,
        "reject": 2,
    }
    applied_u = m.total("eventfleet_events_applied_total", family="u")
    assert applied_u == 7 + 3 + 2
    assert m.nonzero("eventfleet_duplicates_dropped_total", "shard") == {dup_shard: 1}
    assert m.total("eventfleet_duplicates_dropped_total", family="u") == 1
    dead = [(s.labels, s.value) for s in m.samples("eventfleet_dead_letters_total") if s.value]
    assert dead == [({"shard": bad_shard, "reason": "bad_json"}, 1.0)]
    outcomes = {
        (s.labels["status"], s.labels["reason"]): s.value
        for s in m.samples("eventfleet_order_outcomes_total")
    }
    assert outcomes == {
        ("confirmed", "none"): 2,
        ("rejected", "insufficient_funds"): 1,
        ("rejected", "out_of_stock"): 1,
        ("rejected", "unknown_item"): 1,
    }
    batches = m.total("eventfleet_batch_size_count")
    assert 1 <= batches <= entries
    assert m.total("eventfleet_batch_duration_seconds_count") == batches
    assert m.total("eventfleet_batch_duration_seconds_sum") > 0
    # one latency observation per shard batch that applied something (its oldest entry)
    assert 2 <= m.total("eventfleet_end_to_end_latency_seconds_count") <= 20
    for family in ("u", "i"):
        assert m.total("eventfleet_end_to_end_latency_seconds_count", family=family) >= 1
    assert m.total("eventfleet_end_to_end_latency_seconds_sum") > 0

    # Sampled gauges: every owned shard has lag, pending, snapshot size and age.
    def sampled() -> Scrape | None:
        m = a.scrape()
        lag = m.by("eventfleet_shard_lag", "shard")
        size = m.by("eventfleet_snapshot_size_bytes", "shard")
        ok = lag == dict.fromkeys(shards, 0.0) and set(size) == shards and all(size.values())
        return m if ok else None

    m = until(sampled, 15, "lag, pending and snapshot gauges of every shard")
    assert m.by("eventfleet_shard_pending", "shard") == dict.fromkeys(shards, 0.0)
    assert set(m.by("eventfleet_snapshot_age_seconds", "shard")) == shards
    assert all(v >= 0 for v in m.by("eventfleet_snapshot_age_seconds", "shard").values())
    assert m.total("eventfleet_snapshot_duration_seconds_count") >= len(shards)
    for s in shards:
        snap = r.get(keys.snapshot(s))
        assert snap is not None
        # the gauge is the size of the latest snapshot this worker wrote
        assert m.total("eventfleet_snapshot_size_bytes", shard=s) > 0

    # A second worker joins: the first hands over what the second now targets.
    b = start(fleet)
    assert len(set(assign(shards, [a.id, b.id]).values())) == 2
    wait_ready(b)

    def rebalanced() -> tuple[Scrape, Scrape] | None:
        ma, mb = a.scrape(), b.scrape()
        owned_a = ma.total("eventfleet_shards_owned")
        owned_b = mb.total("eventfleet_shards_owned")
        ok = (
            owned_a + owned_b == len(shards)
            and owned_b > 0
            and ma.total("eventfleet_lease_handovers_total") == owned_b
            and mb.total("eventfleet_lease_acquisitions_total") == owned_b
        )
        return (ma, mb) if ok else None

    until(rebalanced, 30, "the first worker to hand shards over to the second")
    held = owners(r, namespace, counts)
    held_a = {s for s, o in held.items() if o == a.id}
    held_b = {s for s, o in held.items() if o == b.id}
    assert held_a | held_b == shards

    # Each shard's lag is reported by its owner only: sum(eventfleet_shard_lag) is the total.
    def reported_by_owners() -> tuple[Scrape, Scrape] | None:
        ma, mb = a.scrape(), b.scrape()
        ok = (
            set(ma.by("eventfleet_shard_lag", "shard")) == held_a
            and set(mb.by("eventfleet_shard_lag", "shard")) == held_b
            and set(mb.by("eventfleet_snapshot_age_seconds", "shard")) == held_b
        )
        return (ma, mb) if ok else None

    ma, mb = until(reported_by_owners, 15, "each shard's gauges on its owner only")
    assert ma.nonzero("eventfleet_lease_handovers_total", "shard") == dict.fromkeys(held_b, 1.0)
    assert mb.total("eventfleet_recovery_duration_seconds_count") == len(held_b)

    ids = {a.id, b.id, "o-1", "o-2", "apple", "pear", "ghost", "p:resent"}
    for scrape in (ma, mb):
        check_labels_bounded(scrape, ids)
        check_queries_against(scrape)

    # `status --json` agrees with Redis: owners, epochs, lag, pending, snapshot age, replay.
    def status_settled() -> dict[str, Any] | None:
        doc: dict[str, Any] = cli_json("status", "--json", env=env)
        return doc if {row["owner"] for row in doc["shards"]} == {a.id, b.id} else None

    doc = until(status_settled, 15, "status to show both workers as owners")
    assert doc["totals"] == {
        "lag": 0,
        "pending": 0,
        "owned": len(shards),
        "shards": len(shards),
        "idle": True,
    }
    for row in doc["shards"]:
        s = row["shard"]
        assert row["owner"] == (a.id if s in held_a else b.id)
        assert row["epoch"] == int(r.get(keys.epoch(s)) or 0)
        assert row["lag"] == 0 and row["pending"] == 0 and row["idle"] is True
        assert row["snapshot_age_s"] is not None and row["snapshot_age_s"] >= 0
        snap = r.get(keys.snapshot(s))
        assert snap is not None
        snap_id = ShardState.from_snapshot(snap, s).last_id
        assert row["snapshot_id"] == snap_id
        assert row["to_replay"] == count_range(r, keys.events(s), snap_id)
        assert row["length"] == r.xlen(keys.events(s))

    # Logs: one JSON object a line, the worker id, shard and epoch bound as context.
    assert fleet.terminate(a.proc) == 0 and fleet.terminate(b.proc) == 0
    check_worker_logs(a, shards, bad_shard)


def check_queries_against(m: Scrape) -> None:
    """The dashboard's queries, and the examples and alerts of docs/OBSERVABILITY.md, use
    only series a live worker exposes."""
    exposed = m.exposed_names() | PROMETHEUS_OWN
    for expr in dashboard_exprs() + doc_queries():
        names = promql_metric_names(expr)
        assert names, f"no metric name found in {expr!r}"
        missing = names - exposed
        assert not missing, f"query {expr!r} uses {sorted(missing)}, not exposed"


def doc_block(lang: str, after: str) -> str:
    text = DOC.read_text(encoding="utf-8")
    found = re.search(rf"```{lang}\n(.*?)```", text[text.index(after) :], re.S)
    assert found, f"no {lang} block after {after!r} in {DOC.name}"
    return found.group(1)


def doc_rules() -> dict[str, Any]:
    rules: dict[str, Any] = yaml.safe_load(doc_block("yaml", "## Alert rules"))
    return rules


def doc_queries() -> list[str]:
    """The PromQL examples and the alert expressions of docs/OBSERVABILITY.md."""
    lines = doc_block("promql", "## PromQL").splitlines()
    examples = [line for line in lines if line.strip() and not line.startswith("#")]
    alerts = [rule["expr"] for group in doc_rules()["groups"] for rule in group["rules"]]
    return examples + alerts


def test_the_observability_doc_covers_every_metric_and_its_promql_is_valid(
    tmp_path: Path,
) -> None:
    metrics = contract_metrics()
    text = DOC.read_text(encoding="utf-8")
    assert set(re.findall(r"`(eventfleet_[a-z][a-z_]*)`", text)) == set(metrics)
    for name in metrics:
        assert re.search(rf"^\| `{name}` \|", text, re.M), f"{name} has no row in {DOC.name}"
    series = set(PROMETHEUS_OWN)
    for name, kind in metrics.items():
        suffixes = KIND_SUFFIXES["histogram"] if kind == "histogram" else ("",)
        series.update(name + suffix for suffix in suffixes)
    for expr in doc_queries():
        unknown = promql_metric_names(expr) - series - {"process_cpu_seconds_total"}
        assert not unknown, f"{expr!r} uses {sorted(unknown)}"
    alerts = tmp_path / "alerts.yml"
    alerts.write_text(yaml.safe_dump(doc_rules()))
    promtool_check("rules", str(alerts))
    examples = [
        {"record": f"doc:example_{i}", "expr": expr} for i, expr in enumerate(doc_queries())
    ]
    recorded = tmp_path / "examples.yml"
    recorded.write_text(yaml.safe_dump({"groups": [{"name": "doc", "rules": examples}]}))
    promtool_check("rules", str(recorded))


def check_worker_logs(a: Live, shards: set[str], bad_shard: str) -> None:
    a.assert_json_lines()
    lines = a.logs()
    assert lines and all({"event", "level", "timestamp"} <= e.keys() for e in lines)
    assert all(e["worker_id"] == a.id for e in lines), "worker_id is not bound on every line"
    names = [e["event"] for e in lines]
    for name in ("connected", "worker_started", "draining", "worker_stopped"):
        assert name in names, f"no {name!r} line"
    assert names.index("worker_started") < names.index("worker_stopped")
    per_shard = ("lease_acquired", "snapshot_written", "handed_over", "dead_letter")
    for e in lines:
        if e["event"] in per_shard:
            assert re.fullmatch(r"[ui][0-9]+", e["shard"]) and e["epoch"] >= 1, e
    acquired = a.events("lease_acquired")
    assert len(acquired) == 8
    for e in acquired:
        for count in ("replayed", "claimed", "restored", "seconds"):
            assert count in e, f"lease_acquired lacks {count}: {e}"
    # handed over: to the second worker when it joined, the rest on the drain
    assert {e["shard"] for e in a.events("handed_over")} == shards
    dead = a.events("dead_letter")
    assert len(dead) == 1 and dead[0]["shard"] == bad_shard and dead[0]["reason"] == "bad_json"
    assert dead[0]["level"] == "warning"


# ---------------------------------------------------------------- takeover after SIGKILL


def pending_by_consumer(r: redis.Redis, keys: Keys, counts: ShardCounts, consumer: str) -> int:
    n = 0
    for s in counts.all_shards():
        summary: Any = r.xpending(keys.events(s), GROUP)
        for c in summary["consumers"]:
            if c["name"].decode() == consumer:
                n += int(c["pending"])
    return n


def test_takeover_after_a_sigkill_counts_claimed_and_replayed_entries(
    r: redis.Redis,
    redis_server: LocalRedis,
    namespace: str,
    env: dict[str, str],
    tmp_path: Path,
    fleet_factory: list[LocalFleet],
) -> None:
    counts = setup_namespace(r, namespace)
    keys = Keys(namespace)
    fleet = make_fleet(redis_server.url, namespace, tmp_path, fleet_factory)
    a = start(fleet)
    wait_ready(a)
    producer = Producer(r, keys, counts)
    events = mixed(1_000_000, seed=41)

    def stopped_mid_batch() -> int:
        """Publish a chunk and pause the worker: kill it if it holds entries read but not
        acked, else resume it for another round."""
        producer.publish(itertools.islice(events, 500))
        fleet.pause(a.proc)
        held = pending_by_consumer(r, keys, counts, a.id)
        if held:
            fleet.kill(a.proc)
        else:
            fleet.resume(a.proc)
        return held

    claimed = wait_for(stopped_mid_batch, 60, "the worker to be caught between read and ack")
    # What a new owner must do, from Redis alone: replay (snapshot, last delivered], claim
    # the dead worker's pending entries.
    to_replay: dict[str, int] = {}
    replay: dict[str, int] = {}
    for s in counts.all_shards():
        snap = r.get(keys.snapshot(s))
        snap_id = "0-0" if snap is None else ShardState.from_snapshot(snap, s).last_id
        delivered = next(
            g["last-delivered-id"].decode()
            for g in r.xinfo_groups(keys.events(s))
            if g["name"] == GROUP.encode()
        )
        replay[s] = count_range(r, keys.events(s), snap_id, delivered)
        to_replay[s] = count_range(r, keys.events(s), snap_id)
    assert sum(replay.values()) >= claimed > 0

    # `status --json` gives the same recovery estimate and shows the claimable entries.
    doc = cli_json("status", "--json", env=env)
    assert {row["shard"]: row["to_replay"] for row in doc["shards"]} == to_replay
    assert doc["totals"]["pending"] == claimed

    b = start(fleet)
    wait_ready(b)

    def recovered() -> Scrape | None:
        m = b.scrape()
        return m if m.total("eventfleet_recovery_duration_seconds_count") == 8 else None

    m = until(recovered, 30, "the new worker to take over every shard")
    assert m.total("eventfleet_claimed_entries_total") == claimed
    assert m.nonzero("eventfleet_replayed_entries_total", "shard") == {
        s: n for s, n in replay.items() if n
    }
    assert m.total("eventfleet_lease_acquisitions_total") == 8
    logged = {e["shard"]: e["replayed"] for e in b.events("lease_acquired")}
    assert logged == replay
    assert sum(e["claimed"] for e in b.events("lease_acquired")) == claimed
    wait_idle(r, namespace, counts)


def test_an_entry_delivered_too_often_counts_as_a_dead_letter_on_takeover(
    r: redis.Redis,
    redis_server: LocalRedis,
    namespace: str,
    tmp_path: Path,
    fleet_factory: list[LocalFleet],
) -> None:
    counts = setup_namespace(r, namespace)
    keys = Keys(namespace)
    shard, eid = plant_crash_looping_entry(r, keys, counts)
    fleet = make_fleet(redis_server.url, namespace, tmp_path, fleet_factory)
    a = start(fleet)
    wait_ready(a)
    wait_idle(r, namespace, counts)
    m = a.scrape()
    dead = [(s.labels, s.value) for s in m.samples("eventfleet_dead_letters_total") if s.value]
    assert dead == [({"shard": shard, "reason": "max_deliveries"}, 1.0)]
    assert m.nonzero("eventfleet_claimed_entries_total", "shard") == {shard: 1}
    assert m.nonzero("eventfleet_replayed_entries_total", "shard") == {shard: 1}
    assert m.total("eventfleet_events_applied_total") == 0
    [line] = a.events("dead_letter")
    assert (line["shard"], line["entry_id"], line["reason"]) == (shard, eid, "max_deliveries")
    assert line["epoch"] == 1 and line["worker_id"] == a.id


# ---------------------------------------------------------------- a paused worker


def test_a_paused_worker_does_not_answer_then_loses_its_leases_and_is_not_ready(
    r: redis.Redis,
    redis_server: LocalRedis,
    namespace: str,
    tmp_path: Path,
    fleet_factory: list[LocalFleet],
) -> None:
    counts = setup_namespace(r, namespace)
    fleet = fleet_of_two(
        redis_server.url,
        namespace,
        tmp_path,
        fleet_factory,
        counts,
        EVENTFLEET_LEASE_TTL_MS="3000",
    )
    a, b = start(fleet), start(fleet)
    settled = assign(counts.all_shards(), [a.id, b.id])
    assert set(settled.values()) == {a.id, b.id}
    for w in (a, b):
        wait_ready(w)
    wait_for(
        lambda: owners(r, namespace, counts) == settled,
        30,
        "the shards to settle on their rendezvous owners",
    )
    held = {s for s, o in settled.items() if o == a.id}
    fleet.pause(a.proc)
    # A stopped process cannot answer: a probe times out (the kernel still accepts the TCP
    # connection), which an orchestrator counts as a failure.
    assert a.get("/healthz", timeout=0.5) is None
    assert a.get("/readyz", timeout=0.5) is None
    wait_for(
        lambda: all(o == b.id for o in owners(r, namespace, counts).values()),
        30,
        "the other worker to take over the paused worker's shards",
    )
    fleet.resume(a.proc)
    # Its leases expired while it was stopped: not ready from the first answer on ...
    assert a.get("/readyz") == 503
    # ... until the other worker hands back what it targets and it holds that again.
    wait_ready(a)
    assert a.get("/healthz") == 200
    m = a.scrape()
    assert m.nonzero("eventfleet_lease_losses_total", "shard") == dict.fromkeys(held, 1.0)
    assert m.total("eventfleet_shards_owned") > 0
    assert set(owners(r, namespace, counts).values()) == {a.id, b.id}
    # The probes that timed out while it was stopped are answered into closed sockets on
    # resuming: that must not print tracebacks between the JSON lines.
    a.assert_json_lines()
    lost = a.events("lease_lost")
    assert {e["shard"] for e in lost} == held
    assert all(e["reason"] and e["epoch"] >= 1 and e["worker_id"] == a.id for e in lost)
    wait_for(
        lambda: b.scrape().total("eventfleet_lease_handovers_total") > 0,
        10,
        "the other worker to count its hand-overs",
    )


# ---------------------------------------------------------------- Redis stops


def test_redis_outage_flips_readiness_and_counts_retries_and_errors(
    own_redis: LocalRedis, namespace: str, tmp_path: Path, fleet_factory: list[LocalFleet]
) -> None:
    r = redis.Redis.from_url(own_redis.url)
    counts = setup_namespace(r, namespace)
    fleet = make_fleet(own_redis.url, namespace, tmp_path, fleet_factory)
    a = start(fleet, EVENTFLEET_LOG_LEVEL="warning")
    wait_ready(a)
    before = a.scrape()
    assert before.total("eventfleet_redis_errors_total") == 0

    own_redis.stop()
    wait_for(lambda: a.get("/readyz") == 503, 30, "readiness to drop while Redis is down")

    # Calls are retried until their deadline, then count as errors.
    def failed() -> Scrape | None:
        m = a.scrape()
        return m if m.total("eventfleet_redis_errors_total") else None

    m = until(failed, 30, "a Redis call to fail after its retries")
    assert m.total("eventfleet_redis_retries_total") > 0
    assert a.get("/readyz") == 503
    # The loop still ticks while it retries: liveness holds, so no orchestrator restarts
    # every worker for a Redis outage.
    assert a.get("/healthz") == 200

    own_redis.start()
    wait_ready(a)
    applied = m.total("eventfleet_events_applied_total")
    Producer(r, Keys(namespace), counts).publish([Topup(user_id=1, amount=5)])
    wait_for(
        lambda: a.scrape().total("eventfleet_events_applied_total") == applied + 1,
        30,
        "the worker to apply events again",
    )
    # EVENTFLEET_LOG_LEVEL=warning: the outage is logged, the routine info lines are not.
    lines = a.logs()
    names = {e["event"] for e in lines}
    assert {"redis_retry", "redis_unavailable"} <= names
    assert all(e["level"] in ("warning", "error") for e in lines), names
    retry = next(e for e in lines if e["event"] == "redis_retry")
    assert retry["operation"] and retry["attempt"] >= 1 and retry["error"]
    for e in lines:  # a retried call about one shard names it
        if e["event"] == "redis_retry" and e["operation"] in ("snapshot", "release"):
            assert re.fullmatch(r"[ui][0-9]+", e["shard"]) and e["epoch"] >= 1, e
    assert all(e["worker_id"] == a.id for e in lines)


# ---------------------------------------------------------------- lag and pending


def test_lag_and_pending_gauges_follow_the_workers_group(
    r: redis.Redis,
    redis_server: LocalRedis,
    namespace: str,
    tmp_path: Path,
    fleet_factory: list[LocalFleet],
) -> None:
    counts = setup_namespace(r, namespace)
    keys = Keys(namespace)
    shard = user_shard(1, counts)
    stream = keys.events(shard)
    # Another reader's group on the same stream must not be mistaken for the fleet's.
    r.xgroup_create(stream, "zz-audit", id="0")
    fleet = make_fleet(
        redis_server.url,
        namespace,
        tmp_path,
        fleet_factory,
        EVENTFLEET_LEASE_TTL_MS="5000",
        EVENTFLEET_BATCH_SIZE="100",
    )
    Producer(r, keys, counts).publish([Topup(user_id=1, amount=1)] * 50)
    a = start(fleet)
    wait_ready(a)
    wait_idle(r, namespace, counts)
    wait_for(
        lambda: gauge_by_shard(a, "eventfleet_shard_lag").get(shard) == 0,
        10,
        "the lag of the fleet's group (not the audit group's 50) to be sampled",
    )

    burst = 300
    fleet.pause(a.proc)
    Producer(r, keys, counts).publish([Topup(user_id=1, amount=1)] * burst)
    # An operator's stray read leaves three entries pending under another consumer.
    r.xreadgroup(GROUP, "inspector", {stream: ">"}, count=3)
    # The fault: a pause longer than the sampling period, shorter than the lease TTL. On
    # resuming, the worker samples before it can have read more than one batch.
    time.sleep(LAG_SAMPLE_S + 0.5)
    fleet.resume(a.proc)

    def backlog() -> tuple[float, float] | None:
        m = a.scrape()
        lag = m.total("eventfleet_shard_lag", shard=shard)
        pending = m.total("eventfleet_shard_pending", shard=shard)
        return (lag, pending) if lag > 0 else None

    lag, pending = until(backlog, 10, "the backlog to show in the lag gauge")
    assert burst - 3 - 100 <= lag <= burst - 3
    assert pending == 3
    wait_for(
        lambda: gauge_by_shard(a, "eventfleet_shard_lag").get(shard) == 0,
        10,
        "the lag to fall back to 0",
    )
    assert gauge_by_shard(a, "eventfleet_shard_pending")[shard] == 3
    stray = r.xpending_range(stream, GROUP, min="-", max="+", count=10)
    r.xack(stream, GROUP, *[p["message_id"] for p in stray])
    wait_for(
        lambda: gauge_by_shard(a, "eventfleet_shard_pending").get(shard) == 0,
        10,
        "the pending gauge to follow the ack",
    )


def test_a_metrics_port_in_use_is_one_fatal_line(
    r: redis.Redis,
    redis_server: LocalRedis,
    namespace: str,
    tmp_path: Path,
    fleet_factory: list[LocalFleet],
) -> None:
    setup_namespace(r, namespace)
    fleet = make_fleet(redis_server.url, namespace, tmp_path, fleet_factory)
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = int(taken.getsockname()[1])
        w = fleet.start({"EVENTFLEET_METRICS_PORT": str(port)})
        assert w.proc.wait(timeout=30) == 2
    worker = Live(w, port)
    worker.assert_json_lines()
    [fatal] = worker.events("fatal")
    assert str(port) in fatal["error"] and fatal["level"] == "error"


# ---------------------------------------------------------------- health server, log format


def test_healthz_turns_503_when_the_loop_stops_ticking(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A loop stuck in one call cannot be made on demand in a real worker; the server's
    rule is checked here: /healthz reports the age of the last tick, /readyz needs it too."""
    health = HealthState(stale_after_s=0.3)
    health.redis_ok = health.holds_targets = True
    server = serve(health, "127.0.0.1", 0)
    port = int(server.server_address[1])
    try:
        health.tick()
        assert http_status(port, "/healthz") == 200
        wait_for(lambda: http_status(port, "/healthz") == 503, 10, "a stale loop to be reported")
        assert http_status(port, "/readyz") == 503
        health.tick()
        assert http_status(port, "/healthz") == 200
        assert http_status(port, "/nope") == 404
        assert "eventfleet_build_info" in scrape(port).families
        # a prober that hung up before the answer is no error: nothing on stderr
        with socket.socket() as gone:
            try:
                raise BrokenPipeError(32, "Broken pipe")
            except BrokenPipeError:
                server.handle_error(gone, ("127.0.0.1", 1))
        assert "Traceback" not in capsys.readouterr().err
    finally:
        server.shutdown()
        server.server_close()


def test_cli_commands_keep_retry_warnings_out_of_their_output(env: dict[str, str]) -> None:
    down = {**env, "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}
    res = cli("status", "--json", env=down, check=False)
    assert res.returncode == 1
    assert res.stdout == ""
    assert res.stderr.startswith("error: cannot reach Redis") and res.stderr.count("\n") == 1


LOG_SNIPPET = (
    "from store.logs import configure; import structlog; configure('info', 'auto'); "
    "structlog.get_logger('t').info('hello', shard='u1'); "
    "structlog.get_logger('t').debug('hidden')"
)


def test_logs_are_json_lines_off_a_terminal_and_readable_on_one() -> None:
    off = subprocess.run(
        [sys.executable, "-c", LOG_SNIPPET], capture_output=True, text=True, check=True
    )
    [line] = off.stderr.splitlines()
    doc = json.loads(line)
    assert doc["event"] == "hello" and doc["shard"] == "u1" and doc["level"] == "info"
    assert "timestamp" in doc

    leader, follower = pty.openpty()
    try:
        proc = subprocess.run(
            [sys.executable, "-c", LOG_SNIPPET],
            stdin=subprocess.DEVNULL,
            stdout=follower,
            stderr=follower,
            check=True,
            timeout=30,
        )
        assert proc.returncode == 0
        text = os.read(leader, 65536).decode()
    finally:
        os.close(leader)
        os.close(follower)
    assert "hello" in text and "shard" in text and "u1" in text and "hidden" not in text
    assert not text.lstrip().startswith("{"), "a terminal should get console output"
