"""The small HTTP server of the worker and the exporter: ``/metrics``, ``/healthz`` and
``/readyz``, from a daemon thread.

``/metrics`` answers what ``metrics()`` renders (Prometheus' text format); ``/healthz`` and
``/readyz`` answer 200 or 503 as ``healthy()`` and ``ready()`` say. A process without a
readiness of its own (the exporter) passes no ``ready``, and ``/readyz`` is then 404 like any
other path. Request errors are one log line each, never a traceback on stderr in the middle
of the JSON log lines (socketserver's default); a prober that gave up before the answer is
no error at all.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import structlog
from prometheus_client import CONTENT_TYPE_LATEST


def serve(
    host: str,
    port: int,
    *,
    metrics: Callable[[], bytes],
    healthy: Callable[[], bool],
    ready: Callable[[], bool] | None = None,
    name: str,
) -> ThreadingHTTPServer:
    """Serve the paths from a daemon thread called ``name``; request errors are logged as
    ``<name>_request_failed`` by the logger ``eventfleet.<name>``. Raises ``OSError`` when
    the port cannot be bound."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._send(200, metrics(), CONTENT_TYPE_LATEST)
            elif path == "/healthz":
                ok = healthy()
                self._send(200 if ok else 503, b"ok\n" if ok else b"stalled\n")
            elif path == "/readyz" and ready is not None:
                ok = ready()
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
    server.name = name
    threading.Thread(target=server.serve_forever, name=name, daemon=True).start()
    return server


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    name = "http"

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, ConnectionError):
            return
        log = structlog.get_logger(f"eventfleet.{self.name}")
        log.warning(f"{self.name}_request_failed", error=f"{type(exc).__name__}: {str(exc)[:200]}")
