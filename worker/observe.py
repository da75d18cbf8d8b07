"""What the worker reports to Prometheus, behind one object the loop and ownership call.

The loop and ``Ownership`` say what happened (a batch applied, a lease lost, a snapshot
written); ``Observer`` turns that into the metrics of ``eventfleet.worker.metrics``. The calls are
per
batch or per ownership event, never per entry: the loop counts in plain dicts while it
applies a batch and hands the counts over once.
"""

from __future__ import annotations

import contextlib
import time
from collections import Counter
from collections.abc import Iterable

from eventfleet.ledger.rules import DeadLetter
from eventfleet.store import ids
from eventfleet.worker import metrics


class Observer:
    def __init__(self, snapshot_interval_s: float) -> None:
        metrics.initialise(snapshot_interval_s)

    # ---- the loop ---------------------------------------------------------------------
    def batch_applied(self, events: int, seconds: float) -> None:
        """A batch over all owned shards was applied and its effects written (``events``:
        the events it held, each event of a bundle counted)."""
        metrics.BATCH_SIZE.observe(events)
        metrics.BATCH_DURATION.observe(seconds)

    def shard_applied(
        self,
        shard: str,
        family: str,
        types: Counter[str],
        duplicates: int,
        oldest: str | None,
    ) -> None:
        """One shard's part of a batch: events applied by type, duplicates dropped, and
        ``oldest``, the id of its oldest applied entry (None when none was applied)."""
        if oldest is not None:
            # one observation per shard batch, its oldest entry's (an observation per entry
            # cost more than applying a top-up); under load a batch spans milliseconds
            latency_s = time.time() - ids.millis(oldest) / 1000
            metrics.LATENCY.labels(family=family).observe(max(0.0, latency_s))
        for t, n in types.items():
            metrics.EVENTS_APPLIED.labels(family=family, shard=shard, type=t).inc(n)
        if duplicates:
            metrics.DUPLICATES.labels(family=family, shard=shard).inc(duplicates)

    def outcomes(self, counts: Counter[tuple[str, str]]) -> None:
        """Order outcomes produced, counted by (status, reason); no reason is ``"none"``."""
        for (status, reason), n in counts.items():
            metrics.OUTCOMES.labels(status=status, reason=reason).inc(n)

    def dead_lettered(self, shard: str, dead: Iterable[DeadLetter]) -> None:
        for d in dead:
            metrics.DEAD_LETTERS.labels(shard=shard, reason=d.reason).inc()

    # ---- ownership --------------------------------------------------------------------
    def shards_owned(self, n: int) -> None:
        metrics.SHARDS_OWNED.set(n)

    def lease_acquired(self, shard: str) -> None:
        metrics.initialise_shard(shard)
        metrics.LEASE_ACQUIRED.labels(shard=shard).inc()

    def lease_lost(self, shard: str) -> None:
        metrics.LEASE_LOSSES.labels(shard=shard).inc()

    def handed_over(self, shard: str) -> None:
        metrics.LEASE_HANDOVERS.labels(shard=shard).inc()

    def snapshot_written(self, shard: str, size: int, seconds: float) -> None:
        metrics.SNAPSHOT_DURATION.observe(seconds)
        metrics.SNAPSHOT_SIZE.labels(shard=shard).set(size)
        metrics.SNAPSHOT_AGE.labels(shard=shard).set(0)

    def snapshot_age(self, shard: str, seconds: float) -> None:
        metrics.SNAPSHOT_AGE.labels(shard=shard).set(seconds)

    def shard_dropped(self, shard: str) -> None:
        """No longer held: its per-shard gauges go, so they do not report a stale value."""
        for g in (metrics.SNAPSHOT_AGE, metrics.SNAPSHOT_SIZE):
            with contextlib.suppress(KeyError):
                g.remove(shard)
