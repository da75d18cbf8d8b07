"""A live worker's /metrics: every contract family is exposed and moves as a saga touching
every order path runs; labels stay bounded; the dashboard's and the docs' queries use only
exposed series; `status --json` agrees with Redis; the worker's log lines."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import redis

from eventfleet.ledger.codec import encode
from eventfleet.ledger.events import EVENT_TYPES, AddItem, Order, Topup
from eventfleet.ledger.rules import DEAD_LETTER_REASONS
from eventfleet.ledger.shards import ShardCounts, destination
from eventfleet.ledger.state import ShardState
from eventfleet.local.fleet import LocalFleet
from eventfleet.local.redisserver import LocalRedis
from eventfleet.producer.client import Producer
from eventfleet.store.keys import EVENT_FIELD, Keys
from eventfleet.worker.assignment import assign
from eventfleet.worker.metrics import OPERATIONS, OUTCOME_LABELS, package_version
from tests.deploy_files import (
    contract_api_metrics,
    contract_exporter_metrics,
    contract_metrics,
    dashboard_exprs,
)
from tests.fleet_utils import owners, setup_namespace
from tests.helpers import cli_json
from tests.live_worker import (
    Live,
    Scrape,
    count_range,
    fleet_of_two,
    start,
    until,
    wait_idle,
    wait_ready,
)
from tests.promql import PROMETHEUS_OWN, doc_queries, promql_metric_names

OUTCOMES = "eventfleet_order_outcomes_total"
APPLIED = "eventfleet_events_applied_total"
DEAD = "eventfleet_dead_letters_total"

# Every label a worker may put on an eventfleet_ series, and the values it may take: bounded
# sets, never an id (worker, order, user, item).
LABEL_VALUES = {
    "family": r"[ui]",
    "shard": r"[ui][0-9]{1,4}",
    "type": "|".join(EVENT_TYPES),
    "reason": r"[a-z]+(_[a-z]+)*",
    "status": r"confirmed|rejected|duplicate",
    "operation": r"[a-z]+(_[a-z]+)*",
    "version": r"[0-9]+(\.[0-9]+)*([.+-][0-9A-Za-z.+-]+)?",
    "le": r"[0-9.e+-]+|\+Inf",
    "eventfleet_namespace": r"t[0-9a-f]{8}",  # the test's namespace, on every series
    "stream": r"events|outcomes|dlq",
}


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


def saga(counts: ShardCounts) -> list[Topup | AddItem | Order]:
    """Every order path once or twice: confirmed, insufficient funds, out of stock, unknown,
    and an order id used twice."""
    return [
        *(Topup(user_id=u, amount=1000) for u in range(1, 7)),
        AddItem(item_id="apple", count=5, price=100),
        AddItem(item_id="pear", count=1, price=5000),
        Order(order_id="o-1", user_id=1, item_id="apple", qty=2),  # confirmed
        Order(order_id="o-2", user_id=2, item_id="pear", qty=1),  # 5000 > 1000: released
        Order(order_id="o-3", user_id=3, item_id="apple", qty=10),  # out of stock
        Order(order_id="o-4", user_id=4, item_id="ghost", qty=1),  # unknown item
        Order(order_id="o-5", user_id=5, item_id="apple", qty=1),  # confirmed
        Order(order_id="o-1", user_id=1, item_id="apple", qty=1),  # id decided: released
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
        ({"version": package_version(), "eventfleet_namespace": namespace}, 1.0)
    ]
    for f in m.families.values():
        for sample in f.samples if f.name.startswith("eventfleet_") else ():
            assert sample.labels["eventfleet_namespace"] == namespace, sample
    check_counters_start_at_zero(m, shards)
    assert m.total("eventfleet_worker_shards_owned") == len(shards)
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
    entries = 14 + 8 + 2 + 1  # published, emitted by the worker (4 charges, 2 releases, 2 rejects)
    wait_idle(r, namespace, counts)

    def settled() -> Scrape | None:
        m = a.scrape()
        return m if m.total("eventfleet_batch_size_sum") == entries else None

    m = until(settled, 10, "the last batch to be observed")
    assert m.nonzero("eventfleet_events_applied_total", "type") == {
        "topup": 7,
        "add_item": 2,
        "order": 6,
        "charge": 4,
        "release": 2,
        "reject": 2,
    }
    applied_u = m.total("eventfleet_events_applied_total", family="u")
    assert applied_u == 7 + 4 + 2
    assert m.nonzero("eventfleet_duplicates_dropped_total", "shard") == {dup_shard: 1}
    assert m.total("eventfleet_duplicates_dropped_total", family="u") == 1
    dead = [(s.labels, s.value) for s in m.samples("eventfleet_dead_letters_total") if s.value]
    assert dead == [
        ({"shard": bad_shard, "reason": "bad_json", "eventfleet_namespace": namespace}, 1.0)
    ]
    outcomes = {
        (s.labels["status"], s.labels["reason"]): s.value
        for s in m.samples("eventfleet_order_outcomes_total")
    }
    assert outcomes == {
        ("confirmed", "none"): 2,
        ("rejected", "insufficient_funds"): 1,
        ("rejected", "out_of_stock"): 1,
        ("rejected", "unknown_item"): 1,
        ("rejected", "amount_too_large"): 0,  # started at 0 like every outcome
        ("duplicate", "none"): 1,
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

    # Snapshot gauges: every owned shard has its snapshot size and age.
    def sampled() -> Scrape | None:
        m = a.scrape()
        size = m.by("eventfleet_snapshot_size_bytes", "shard")
        return m if set(size) == shards and all(size.values()) else None

    m = until(sampled, 15, "snapshot gauges of every shard")
    assert "eventfleet_shard_lag" not in m.families, "per-shard backlog is the exporter's"
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
        owned_a = ma.total("eventfleet_worker_shards_owned")
        owned_b = mb.total("eventfleet_worker_shards_owned")
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

    # Each shard's snapshot gauges are reported by its owner only.
    def reported_by_owners() -> tuple[Scrape, Scrape] | None:
        ma, mb = a.scrape(), b.scrape()
        ok = (
            set(ma.by("eventfleet_snapshot_age_seconds", "shard")) == held_a
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
        "inbox": 0,
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


def check_counters_start_at_zero(m: Scrape, held: set[str]) -> None:
    """Every counter with a bounded label set is exposed for each of its label values from
    the start: the label sets without a shard, and the per-shard ones of the held shards."""
    outcomes = {(s.labels["status"], s.labels["reason"]) for s in m.samples(OUTCOMES)}
    assert outcomes == set(OUTCOME_LABELS)
    for name in ("eventfleet_redis_errors_total", "eventfleet_redis_retries_total"):
        assert set(m.by(name, "operation")) == set(OPERATIONS), name
    per_shard = [
        "eventfleet_lease_handovers_total",
        "eventfleet_lease_losses_total",
        "eventfleet_claimed_entries_total",
        "eventfleet_replayed_entries_total",
        "eventfleet_duplicates_dropped_total",
    ]
    for name in per_shard:
        assert set(m.by(name, "shard")) == held, name
    applied = {(s.labels["shard"], s.labels["type"]) for s in m.samples(APPLIED)}
    assert applied == {(s, t) for s in held for t in EVENT_TYPES}
    dead = {(s.labels["shard"], s.labels["reason"]) for s in m.samples(DEAD)}
    assert dead == {(s, reason) for s in held for reason in DEAD_LETTER_REASONS}
    assert m.total("eventfleet_lease_losses_total") == 0


def check_queries_against(m: Scrape) -> None:
    """The dashboard's queries, and the examples and alerts of docs/OBSERVABILITY.md, use
    only series a live worker, the exporter or the HTTP API exposes (the API's are checked
    live by tests/test_prometheus_live.py)."""
    exposed = (
        m.exposed_names()
        | PROMETHEUS_OWN
        | set(contract_exporter_metrics())
        | {
            name + suffix
            for name, kind in contract_api_metrics().items()
            for suffix in (("_bucket", "_sum", "_count", "") if kind == "histogram" else ("",))
        }
    )
    for expr in dashboard_exprs() + doc_queries():
        names = promql_metric_names(expr)
        assert names, f"no metric name found in {expr!r}"
        missing = names - exposed
        assert not missing, f"query {expr!r} uses {sorted(missing)}, not exposed"


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
