"""Serving the app with uvicorn (httptools, uvloop where installed), and the OpenAPI document.

SIGTERM (or Ctrl-C) stops accepting connections, lets the requests in flight finish (up to
``GRACE_S``), closes the identities' clients, and exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
from collections.abc import Iterator
from typing import Any

from eventfleet.api.app import create_app
from eventfleet.api.corked import corked
from eventfleet.api.state import ApiConfig
from eventfleet.store.settings import Settings

GRACE_S = 35
"""SIGTERM: how long requests in flight may take to finish (a long-poll waits at most 30 s)."""


def openapi_document(settings: Settings | None = None) -> dict[str, Any]:
    """The OpenAPI document the code describes (docs/openapi.json holds a copy)."""
    doc: dict[str, Any] = create_app(settings or Settings()).openapi()
    return doc


def openapi_text() -> str:
    """The committed form: `eventfleet api --print-openapi > docs/openapi.json`."""
    return json.dumps(openapi_document(), indent=2, sort_keys=True) + "\n"


def _installed(name: str) -> bool:
    try:
        __import__(name)
    except ImportError:
        return False
    return True


def http_protocol() -> type[asyncio.Protocol]:
    """uvicorn's HTTP protocol (httptools where installed, else h11), one write per response
    (``corked``)."""
    if _installed("httptools"):
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

        return corked(HttpToolsProtocol)
    from uvicorn.protocols.http.h11_impl import H11Protocol

    return corked(H11Protocol)


def run(settings: Settings, config: ApiConfig, host: str, port: int) -> int:
    import uvicorn

    class Server(uvicorn.Server):
        """uvicorn's server, but a SIGTERM after the graceful stop is exit 0 (uvicorn raises
        the signal again once it stopped, which ends the process by the signal)."""

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, self.handle_exit)
            yield

    app = create_app(settings, config)
    server = Server(
        uvicorn.Config(
            app,
            host=host,
            port=port,
            loop="uvloop" if _installed("uvloop") else "asyncio",
            http=http_protocol(),
            lifespan="on",
            access_log=False,  # ours: one structured line per request (app.Observe)
            log_config=None,
            server_header=False,
            proxy_headers=False,  # nothing here reads the client's address or scheme
            timeout_graceful_shutdown=GRACE_S,
            timeout_keep_alive=30,
        )
    )
    server.run()
    return 0 if server.started else 1


__all__ = ["GRACE_S", "http_protocol", "openapi_document", "openapi_text", "run"]
