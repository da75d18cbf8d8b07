"""The worker's HTTP endpoints: ``/metrics``, ``/healthz`` and ``/readyz``.

``/healthz`` is 200 while the main loop ticks. ``/readyz`` is 200 when the last Redis call
succeeded and the worker holds every shard it targets (or targets none), with leases not yet
past their deadline: a worker resumed after a pause longer than the lease TTL reports not
ready from its first answer on, before its loop has noticed the loss.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer

from prometheus_client import generate_latest

from eventfleet.store import httpserver


@dataclass
class HealthState:
    stale_after_s: float
    last_tick: float = field(default_factory=time.monotonic)
    redis_ok: bool = False
    holds_targets: bool = False
    held_until: float = math.inf
    """Monotonic time when the first of the held leases runs out unless renewed."""
    lock: threading.Lock = field(default_factory=threading.Lock)

    def tick(self) -> None:
        self.last_tick = time.monotonic()

    def healthy(self) -> bool:
        return time.monotonic() - self.last_tick < self.stale_after_s

    def ready(self) -> bool:
        return (
            self.healthy()
            and self.redis_ok
            and self.holds_targets
            and time.monotonic() < self.held_until
        )


def serve(
    health: HealthState,
    host: str,
    port: int,
    metrics: Callable[[], bytes] = generate_latest,
) -> ThreadingHTTPServer:
    """Serve the three paths from a daemon thread (``eventfleet.store.httpserver``); ``metrics``
    renders
    ``/metrics``."""
    return httpserver.serve(
        host, port, metrics=metrics, healthy=health.healthy, ready=health.ready, name="health"
    )
