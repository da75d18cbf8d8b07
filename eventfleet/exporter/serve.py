"""The exporter process: ``/metrics`` from at most one pass over Redis per interval, whatever
the number of scrapers, and ``/healthz``.

A scrape that finds the last pass younger than the interval gets that pass's exposition; a
scrape that arrives while a pass runs waits for it (one pass at a time, under a lock) and
gets its result. A failed pass is cached the same way, so a Redis outage is not hammered.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from types import FrameType

import structlog
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from eventfleet.exporter.gauges import PassStats, families
from eventfleet.exporter.read import NamespaceReader, Reading
from eventfleet.store import httpserver
from eventfleet.store.errors import TRANSIENT, FatalRedisError, classify
from eventfleet.store.namespace import NamespaceError

log = structlog.get_logger("eventfleet.exporter")
EXPECTED: tuple[type[BaseException], ...] = (*TRANSIENT, FatalRedisError, NamespaceError, OSError)
"""Why a pass may fail without anything being wrong with the exporter: logged as a warning."""


class Exporter(Collector):
    """The cached pass behind ``/metrics``."""

    def __init__(self, reader: NamespaceReader, namespace: str, interval_s: float) -> None:
        self._reader = reader
        self._namespace = namespace
        self._interval_s = interval_s
        self._lock = threading.Lock()
        self._stats = PassStats()
        self._reading: Reading | None = None
        self._body = b""
        self._at = -float("inf")
        self._registry = CollectorRegistry(auto_describe=False)
        self._registry.register(self)

    def exposition(self) -> bytes:
        with self._lock:
            if time.monotonic() - self._at >= self._interval_s:
                self._pass()
                self._body = generate_latest(self._registry)
            return self._body

    def collect(self) -> Iterator[Metric]:
        return families(self._namespace, self._reading, self._stats)

    @property
    def last_ok(self) -> bool:
        return self._stats.last_ok

    def _pass(self) -> None:
        t0 = time.monotonic()
        try:
            reading = self._reader.read()
        except EXPECTED as exc:
            self._reading = None
            self._stats.failed += 1
            self._stats.last_ok = False
            log.warning("exporter_pass_failed", error=f"{type(exc).__name__}: {str(exc)[:200]}")
        except Exception as exc:  # a refused command, or a reply nobody expected: keep serving
            self._reading = None
            self._stats.failed += 1
            self._stats.last_ok = False
            text = str(classify(exc) or f"{type(exc).__name__}: {exc}")
            log.error("exporter_pass_failed", error=text[:300])
        else:
            if reading.unreadable:
                log.warning("shards_unreadable", shards=reading.unreadable[:20])
            self._reading = reading
            self._stats.ok += 1
            self._stats.last_ok = True
        finally:
            self._at = time.monotonic()
            self._stats.last_seconds = self._at - t0


def serve(exporter: Exporter, host: str, port: int) -> ThreadingHTTPServer:
    """``/metrics`` and ``/healthz`` (200 while the process serves) from a daemon thread
    (``eventfleet.store.httpserver``)."""
    return httpserver.serve(
        host, port, metrics=exporter.exposition, healthy=lambda: True, name="exporter"
    )


def run_until_signal(server: ThreadingHTTPServer) -> int:
    """Serve until SIGTERM or SIGINT, then close the server; returns the exit code 0."""
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        log.info("exporter_stopping", signal=signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    stop.wait()
    server.shutdown()
    server.server_close()
    return 0
