"""An online reshard's progress as gauges (docs/DESIGN-DECISIONS.md, section 35): what
``eventfleet status`` shows, from the same reading of ``NS:meta`` and the new shards' seed
snapshots (``eventfleet.ops.reshard_progress``).

Labels are bounded: ``family`` (``user``, ``item``) and ``status`` (``split``, ``waiting``),
never a shard. A pass costs one more pipeline while a reshard runs (one EXISTS per new shard,
``CHUNK`` at a time), none otherwise: the meta hash is read by the pass anyway. The new
shards found seeded get the per-shard gauges too (``read.py``), before the counts are
published: workers take each over once its seed exists.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import redis
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from eventfleet.ops.reshard_progress import MARKED, PREPARING, PUBLISHED, Recorded, recorded
from eventfleet.store.keys import Keys

STATE_VALUES = {PREPARING: 1, MARKED: 2, PUBLISHED: 3}
"""``eventfleet_reshard_state`` of a running reshard; 0 when none runs (none recorded, or
done)."""
FAMILIES = {"u": "user", "i": "item"}
STATUSES = ("split", "waiting")
FAMILY_LABEL, STATUS_LABEL = "family", "status"


@dataclass(frozen=True)
class ReshardReading:
    """A running reshard's progress (the per-family maps are empty when none runs)."""

    state: int = 0
    target: dict[str, int] = field(default_factory=dict)
    """Family -> the shard count the run grows it to."""
    source: dict[str, int] = field(default_factory=dict)
    """Family -> the shard count it grows from."""
    parents: dict[tuple[str, str], int] = field(default_factory=dict)
    """(family, ``split`` or ``waiting``) -> old shards of that family: split (every child
    seeded) or waited for; 0 and 0 for a family that does not grow."""
    seconds: float | None = None
    """Since the run began (``reshard_begun_ms``, by Redis's clock)."""
    seeded: tuple[str, ...] = ()
    """The new shards whose seed snapshot exists (workers take them over from then)."""


def read_reshard(
    r: redis.Redis, keys: Keys, meta: Any, now_ms: int, chunk: int
) -> ReshardReading | None:
    """The progress of the reshard recorded in ``meta``; None when its fields do not parse
    (then no reshard gauge is served)."""
    try:
        rec = recorded(meta, keys)
    except ValueError:
        return None
    if rec is None or not rec.running:
        return ReshardReading()
    kids = [k for ks in rec.children().values() for k in ks]
    seeded: set[str] = set()
    for start in range(0, len(kids), chunk):
        part = kids[start : start + chunk]
        pipe = r.pipeline(transaction=False)
        for k in part:
            pipe.exists(keys.snapshot(k))
        replies = pipe.execute(raise_on_error=False)
        seeded.update(k for k, n in zip(part, replies, strict=True) if isinstance(n, int) and n)
    return _reading(rec, seeded, now_ms)


def _reading(rec: Recorded, seeded: set[str], now_ms: int) -> ReshardReading:
    split, waiting = rec.split_waiting(seeded)
    parents = {(f, s): 0 for f in FAMILIES.values() for s in STATUSES}
    for status, shards in (("split", split), ("waiting", waiting)):
        for shard in shards:
            parents[FAMILIES[shard[0]], status] += 1
    return ReshardReading(
        state=STATE_VALUES[rec.state],
        target={"user": rec.users, "item": rec.items},
        source={"user": rec.old.users, "item": rec.old.items},
        parents=parents,
        seconds=None if rec.begun_ms is None else max(0.0, (now_ms - rec.begun_ms) / 1000),
        seeded=tuple(k for ks in rec.children().values() for k in ks if k in seeded),
    )


def reshard_families(ns: dict[str, str], reading: ReshardReading | None) -> Iterator[Metric]:
    """The reshard's gauges, each series with the constant labels ``ns``: its state always
    (when its fields parse), the rest while it runs."""
    if reading is None:
        return
    ((ns_label, namespace),) = ns.items()
    state = GaugeMetricFamily(
        "eventfleet_reshard_state",
        "Online reshard's step: 0 none running (none recorded, or done), 1 preparing, 2 marked "
        "(split markers appended, waiting for the children's seeds), 3 published",
        labels=[ns_label],
    )
    state.add_metric([namespace], reading.state)
    yield state
    labels = [ns_label, FAMILY_LABEL]
    target = GaugeMetricFamily(
        "eventfleet_reshard_target_shards",
        "Shards of the family the running reshard grows it to",
        labels=labels,
    )
    source = GaugeMetricFamily(
        "eventfleet_reshard_from_shards",
        "Shards of the family the running reshard grows from",
        labels=labels,
    )
    for family, n in reading.target.items():
        target.add_metric([namespace, family], n)
    for family, n in reading.source.items():
        source.add_metric([namespace, family], n)
    parents = GaugeMetricFamily(
        "eventfleet_reshard_parents",
        "Old shards of the family, by status: split (every child of theirs seeded) or waiting "
        "(a child not seeded yet: the owner has not applied the split marker)",
        labels=[*labels, STATUS_LABEL],
    )
    for (family, status), n in reading.parents.items():
        parents.add_metric([namespace, family, status], n)
    seconds = GaugeMetricFamily(
        "eventfleet_reshard_running_seconds",
        "Time since the running reshard began (by Redis's clock)",
        labels=[ns_label],
    )
    if reading.seconds is not None:
        seconds.add_metric([namespace], reading.seconds)
    yield from (target, source, parents, seconds)
