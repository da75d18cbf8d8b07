"""What the exporter serves: the gauges of a ``Reading``, and the exporter's own health.

Each namespace-wide gauge is one row of ``SHARD_GAUGES`` or ``NAMESPACE_GAUGES``: a name, a
help text and a function of the reading. Adding a gauge is one row here and, if it needs
another Redis reply, one command in ``read.py`` (as Redis memory against maxmemory did).
Every series carries the constant ``eventfleet_namespace`` label (``NAMESPACE_LABEL``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from eventfleet.exporter.read import Reading, ShardReading
from eventfleet.exporter.reshard import reshard_families
from eventfleet.store.producers import LEGACY

NAMESPACE_LABEL = "eventfleet_namespace"
"""As the workers' (``eventfleet.worker.metrics.NAMESPACE_LABEL``): not ``namespace``, Kubernetes'
own."""
PRODUCER_LABEL = "producer"


@dataclass(frozen=True)
class ShardGauge:
    name: str
    help: str
    value: Callable[[ShardReading], float]


@dataclass(frozen=True)
class NamespaceGauge:
    name: str
    help: str
    value: Callable[[Reading], float]


SHARD_GAUGES = (
    ShardGauge(
        "eventfleet_shard_lag",
        "Events not yet applied: waiting in the shard's inbox, undelivered to the group, or "
        "delivered and not acked",
        lambda s: s.lag,
    ),
    ShardGauge(
        "eventfleet_shard_lag_seconds",
        "Age of the oldest event not yet applied, in its log or its inbox (0 when caught up)",
        lambda s: s.lag_seconds,
    ),
    ShardGauge(
        "eventfleet_shard_pending",
        "Entries delivered to the group and not yet acknowledged",
        lambda s: s.pending,
    ),
    ShardGauge(
        "eventfleet_shard_has_owner",
        "1 while some worker holds the shard's lease, else 0",
        lambda s: s.owned,
    ),
    ShardGauge(
        "eventfleet_shard_epoch",
        "The lease epoch last issued for the shard (its owner's while owned)",
        lambda s: s.epoch,
    ),
    ShardGauge(
        "eventfleet_shard_dead_letters",
        "Entries in the shard's dead-letter stream",
        lambda s: s.dead_letters,
    ),
    ShardGauge(
        "eventfleet_shard_snapshot_quarantined",
        "1 while a snapshot of the shard that did not decode is kept in its quarantine key",
        lambda s: s.quarantined,
    ),
)

NAMESPACE_GAUGES = (
    NamespaceGauge("eventfleet_shards", "Shards of the namespace", lambda r: r.shard_count),
    NamespaceGauge(
        "eventfleet_live_workers",
        "Workers whose heartbeat in Redis has not lapsed",
        lambda r: r.live_workers,
    ),
    NamespaceGauge(
        "eventfleet_redis_used_memory_bytes",
        "Redis used_memory (on a cluster: the master nearest its limit)",
        lambda r: r.used_memory,
    ),
    NamespaceGauge(
        "eventfleet_redis_maxmemory_bytes",
        "Redis maxmemory of the same node (0: no limit; writes are refused with OOM at it)",
        lambda r: r.maxmemory,
    ),
    NamespaceGauge(
        "eventfleet_producers",
        "Producer identities registered in the namespace (at most 50 have series of their own)",
        lambda r: r.producers_registered,
    ),
    NamespaceGauge(
        "eventfleet_exporter_unreadable_shards",
        "Shards whose keys could not be read or parsed in the last pass",
        lambda r: len(r.unreadable),
    ),
)


@dataclass
class PassStats:
    """The exporter's own record of its passes."""

    ok: int = 0
    failed: int = 0
    last_ok: bool = False
    last_seconds: float = 0.0


def families(namespace: str, reading: Reading | None, stats: PassStats) -> Iterator[Metric]:
    """The metric families of one scrape; ``reading`` is None when the last pass failed, and
    then only the exporter's own series are served (a query over the shard gauges returns
    nothing, which KEDA with ``ignoreNullValues: "false"`` treats as an error, not as 0)."""
    ns = {NAMESPACE_LABEL: namespace}
    yield _gauge(
        "eventfleet_exporter_pass_ok", "1 when the last pass read Redis", stats.last_ok, ns
    )
    yield _gauge(
        "eventfleet_exporter_pass_duration_seconds",
        "Time the last pass took",
        stats.last_seconds,
        ns,
    )
    passes = CounterMetricFamily(
        "eventfleet_exporter_passes",
        "Passes over the namespace",
        labels=[NAMESPACE_LABEL, "outcome"],
    )
    passes.add_metric([namespace, "ok"], stats.ok)
    passes.add_metric([namespace, "failed"], stats.failed)
    yield passes
    if reading is None:
        return
    for ng in NAMESPACE_GAUGES:
        yield _gauge(ng.name, ng.help, ng.value(reading), ns)
    for sg in SHARD_GAUGES:
        family = GaugeMetricFamily(sg.name, sg.help, labels=[NAMESPACE_LABEL, "shard"])
        for s in reading.shards:
            family.add_metric([namespace, s.shard], float(sg.value(s)))
        yield family
    by_reason = GaugeMetricFamily(
        "eventfleet_shard_dead_letters_by_reason",
        "Entries in the shard's dead-letter stream, by reason (only the reasons present)",
        labels=[NAMESPACE_LABEL, "shard", "reason"],
    )
    for s in reading.shards:
        for reason, n in sorted(s.dead_letters_by_reason.items()):
            by_reason.add_metric([namespace, s.shard, reason], n)
    yield by_reason
    yield from _producer_families(namespace, reading)
    yield from reshard_families(ns, reading.reshard)


def _producer_families(namespace: str, reading: Reading) -> Iterator[Metric]:
    """Per producer identity (``eventfleet.exporter.producers``): ``legacy`` has a backlog
    only (its inboxes have no bound and drop nothing)."""
    labels = [NAMESPACE_LABEL, PRODUCER_LABEL]
    backlog = GaugeMetricFamily(
        "eventfleet_producer_backlog",
        "Events waiting in the producer's own inboxes, summed over the shards (legacy: the "
        "shared inboxes)",
        labels=labels,
    )
    fill = GaugeMetricFamily(
        "eventfleet_producer_backlog_fill_ratio",
        "The producer's fullest shard inbox against its bound in events (1: writes refused)",
        labels=labels,
    )
    dropped = GaugeMetricFamily(
        "eventfleet_producer_dropped",
        "Elements the moves dropped from the producer's inboxes: past its bound, or not one event",
        labels=labels,
    )
    for p in reading.producers:
        backlog.add_metric([namespace, p.name], p.waiting)
        if p.name != LEGACY:
            fill.add_metric([namespace, p.name], p.fill)
            dropped.add_metric([namespace, p.name], p.dropped)
    yield backlog
    yield fill
    yield dropped


def _gauge(name: str, help: str, value: float, labels: dict[str, str]) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, help, labels=list(labels))
    family.add_metric(list(labels.values()), float(value))
    return family
