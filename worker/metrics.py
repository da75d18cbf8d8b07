"""Prometheus metrics of a worker. Labels are bounded sets: family, shard, type, reason.

Every counter whose label values are known in advance starts at 0 for each of them (a
``rate()`` or ``increase()`` over a series that appears only at its first increment misses
that increment, and a panel or alert over it is empty instead of 0): the label sets without
a shard at import (``initialise``), the per-shard ones when the worker first holds the shard
(``initialise_shard``). Per-shard backlog (lag, pending, owners) is the exporter's
(``eventfleet.ops.exporter``), read from Redis for every shard, owned or not.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from importlib.metadata import PackageNotFoundError, version
from typing import get_args

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from eventfleet.ledger.events import EVENT_TYPES, OutcomeReason
from eventfleet.ledger.rules import DEAD_LETTER_REASONS
from eventfleet.store import retry

# prometheus_client would add a `<name>_created` timestamp series beside every counter and
# histogram child: one more series per shard and type, which no query or alert here reads.
disable_created_metrics()  # type: ignore[no-untyped-call]  # untyped in prometheus_client

EVENTS_APPLIED = Counter(
    "eventfleet_events_applied", "Events applied to shard state", ["family", "shard", "type"]
)
DUPLICATES = Counter(
    "eventfleet_duplicates_dropped",
    "Entries dropped as duplicates by (source, seq)",
    ["family", "shard"],
)
DEAD_LETTERS = Counter(
    "eventfleet_dead_letters", "Entries moved to a dead-letter stream", ["shard", "reason"]
)
OUTCOMES = Counter("eventfleet_order_outcomes", "Order outcomes written", ["status", "reason"])
BATCH_SIZE = Histogram(
    "eventfleet_batch_size",
    "Events per applied batch",
    buckets=(1, 5, 10, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 25000),
)
BATCH_DURATION = Histogram(
    "eventfleet_batch_duration_seconds",
    "Time to apply a batch and write its effects",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
LATENCY = Histogram(
    "eventfleet_end_to_end_latency_seconds",
    "Apply time minus the stream entry id's timestamp, of each shard batch's oldest entry",
    ["family"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
SHARDS_OWNED = Gauge("eventfleet_worker_shards_owned", "Shards this worker holds a lease on")
LEASE_ACQUIRED = Counter("eventfleet_lease_acquisitions", "Shard leases acquired", ["shard"])
LEASE_HANDOVERS = Counter("eventfleet_lease_handovers", "Shards handed over on purpose", ["shard"])
LEASE_LOSSES = Counter("eventfleet_lease_losses", "Shard leases lost (renewal failed)", ["shard"])
CLAIMED = Counter(
    "eventfleet_claimed_entries", "Pending entries claimed with XAUTOCLAIM", ["shard"]
)
LOG_GAPS = Counter(
    "eventfleet_takeover_log_gaps",
    "Takeovers that found entries removed from the log after the state they restored",
    ["shard"],
)
SUSPECT_POISON = Counter(
    "eventfleet_suspect_poison_marks",
    "Poison marks a takeover met on entries an owner had applied (no takeover set them)",
    ["shard"],
)
SNAPSHOTS_QUARANTINED = Counter(
    "eventfleet_snapshots_quarantined",
    "Snapshots that did not decode, copied to NS:{f}:quarantine by a takeover",
    ["shard"],
)
REPLAYED = Counter("eventfleet_replayed_entries", "Entries replayed on takeover", ["shard"])
RECOVERY = Histogram(
    "eventfleet_recovery_duration_seconds",
    "Takeover time: restore, claim and replay",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
SNAPSHOT_DURATION = Histogram(
    "eventfleet_snapshot_duration_seconds",
    "Time to encode and write a snapshot",
    buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
SNAPSHOT_SIZE = Gauge("eventfleet_snapshot_size_bytes", "Size of the last snapshot", ["shard"])
SNAPSHOT_AGE = Gauge(
    "eventfleet_snapshot_age_seconds", "Seconds since the last snapshot", ["shard"]
)
TRIMMED = Counter(
    "eventfleet_trimmed_entries",
    "Stream entries removed by retention (stream: events, outcomes, dlq)",
    ["shard", "stream"],
)
REDIS_ERRORS = Counter(
    "eventfleet_redis_errors", "Redis calls that failed after retries", ["operation"]
)
REDIS_RETRIES = Counter("eventfleet_redis_retries", "Redis calls retried", ["operation"])
BUILD_INFO = Gauge("eventfleet_build_info", "Build information", ["version"])
SNAPSHOT_INTERVAL = Gauge(
    "eventfleet_snapshot_interval_seconds", "The worker's EVENTFLEET_SNAPSHOT_INTERVAL_S"
)

TRIMMED_STREAMS = ("events", "outcomes", "dlq")
"""The ``stream`` label of ``eventfleet_trimmed_entries_total`` (outcomes: user shards only)."""
OUTCOME_LABELS = (
    ("confirmed", "none"),
    *(("rejected", r) for r in get_args(OutcomeReason)),
    ("duplicate", "none"),  # an order id decided before (ledger.dedup)
)
"""Every (status, reason) of ``eventfleet_order_outcomes_total``."""
OPERATIONS = (
    "connect",
    "heartbeat",
    "renew",
    "acquire",
    "read",
    "write_effects",
    "wait",
    "release",
    "snapshot",
    "trim",
    "suspend",
    "leave",
    "read_meta",  # the shard list of a growing namespace (worker.growth)
    "read_seeds",  # whether new shards' seeds exist (worker.growth)
)
"""Every ``operation`` the worker passes to ``eventfleet.store.retry.call``."""


def package_version() -> str:
    try:
        return version("eventfleet")
    except PackageNotFoundError:  # pragma: no cover - running from a plain checkout
        return "0+unknown"


BUILD_INFO.labels(version=package_version()).set(1)


def initialise(snapshot_interval_s: float) -> None:
    """Start every counter without a shard label at 0 for all its label values."""
    SNAPSHOT_INTERVAL.set(snapshot_interval_s)
    for status, reason in OUTCOME_LABELS:
        OUTCOMES.labels(status=status, reason=reason)
    for operation in OPERATIONS:
        REDIS_ERRORS.labels(operation=operation)
        REDIS_RETRIES.labels(operation=operation)


def initialise_shard(shard: str) -> None:
    """Start every per-shard counter of ``shard`` at 0 (idempotent: ``labels`` keeps a child
    that exists)."""
    family = shard[0]
    for t in EVENT_TYPES:
        EVENTS_APPLIED.labels(family=family, shard=shard, type=t)
    DUPLICATES.labels(family=family, shard=shard)
    for reason in DEAD_LETTER_REASONS:
        DEAD_LETTERS.labels(shard=shard, reason=reason)
    for counter in (LEASE_ACQUIRED, LEASE_HANDOVERS, LEASE_LOSSES, CLAIMED, REPLAYED):
        counter.labels(shard=shard)
    for stream in TRIMMED_STREAMS if family == "u" else ("events", "dlq"):
        TRIMMED.labels(shard=shard, stream=stream)


def _count_retry(operation: str) -> None:
    REDIS_RETRIES.labels(operation=operation).inc()


def _count_failure(operation: str) -> None:
    REDIS_ERRORS.labels(operation=operation).inc()


retry.hooks.retried = _count_retry
retry.hooks.failed = _count_failure


NAMESPACE_LABEL = "eventfleet_namespace"
"""The label naming the eventfleet namespace on every worker and exporter series (not
``namespace``, which Prometheus' Kubernetes discovery and the Operator set to the pod's
Kubernetes namespace: docs/OBSERVABILITY.md, "Migrating")."""


class _WithNamespace(Collector):
    """The process's metrics, each ``eventfleet_*`` sample with a constant
    ``eventfleet_namespace`` label (``NAMESPACE_LABEL``): two fleets (namespaces) scraped by
    one Prometheus stay apart, and no scrape config's ``namespace`` (Kubernetes') collides."""

    def __init__(self, namespace: str) -> None:
        self._namespace = namespace

    def collect(self) -> Iterator[Metric]:
        for family in REGISTRY.collect():
            if not family.name.startswith("eventfleet_"):
                yield family
                continue
            labelled = copy.copy(family)
            labelled.samples = [
                s._replace(labels={**s.labels, NAMESPACE_LABEL: self._namespace})
                for s in family.samples
            ]
            yield labelled


def exposition(namespace: str) -> Callable[[], bytes]:
    """What ``/metrics`` serves: the text exposition with the ``namespace`` label added."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_WithNamespace(namespace))
    return lambda: generate_latest(registry)
