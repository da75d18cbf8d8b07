"""The worker's HTTP endpoints: ``/metrics``, ``/healthz`` and ``/readyz``.

``/healthz`` is 200 while the main loop ticks. ``/readyz`` is 200 when the last Redis call
succeeded and the worker holds every shard it targets (or targets none), with leases not yet
past their deadline: a worker resumed after a pause longer than the lease TTL reports not
ready from its first answer on, before its loop has noticed the loss.
"""

from __future__ import annotations

import math
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import structlog
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

log = structlog.get_logger("eventfleet.health")


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
    """Serve the three paths from a daemon thread; ``metrics`` renders ``/metrics``."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._send(200, metrics(), CONTENT_TYPE_LATEST)
            elif path == "/healthz":
                ok = health.healthy()
                self._send(200 if ok else 503, b"ok\n" if ok else b"stalled\n")
            elif path == "/readyz":
                ok = health.ready()
                self._send(200 if ok else 503, b"ready\n" if ok else b"not ready\n")
            else:
                self._send(404, b"not found\n")

        def _send(self, code: int, body: bytes, ctype: str = "text/plain") -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            return

    server = _Server((host, port), Handler)
    threading.Thread(target=server.serve_forever, name="health", daemon=True).start()
    return server


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A prober that gave up before the answer (a timed-out probe of a worker that was
        paused) is no error. Anything else is one log line, never a traceback on stderr in
        the middle of the JSON lines (socketserver's default)."""
        exc = sys.exc_info()[1]
        if isinstance(exc, ConnectionError):
            return
        log.warning("health_request_failed", error=f"{type(exc).__name__}: {str(exc)[:200]}")
