"""Helpers of the HTTP API's tests: the app served by uvicorn on a thread of the test process
(fast tier), and one blocking HTTP call that returns status, headers and the parsed body."""

from __future__ import annotations

import http.client
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

import uvicorn

from eventfleet.api.app import create_app
from eventfleet.api.serve import http_protocol
from eventfleet.api.state import ApiConfig
from eventfleet.local.redisserver import free_port
from eventfleet.store.settings import Settings
from tests.helpers import wait_for

JSON = {"Content-Type": "application/json"}


@contextmanager
def served(settings: Settings, config: ApiConfig | None = None) -> Iterator[str]:
    """The app on a free loopback port until the block ends: its base URL."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(settings, config or ApiConfig(access_log=False)),
            host="127.0.0.1",
            port=port,
            log_config=None,
            access_log=False,
            lifespan="on",
            http=http_protocol(),  # as `eventfleet api`: one write per response
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started, timeout=20, what="the API to start")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=20)


def call(
    base: str,
    method: str,
    path: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
    raw: bytes | None = None,
    timeout: float = 30.0,
) -> tuple[int, dict[str, str], Any]:
    """One request: (status, lower-cased headers, the JSON body or its text)."""
    parts = urlsplit(base)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=timeout)
    try:
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        hdrs = dict(headers or {})
        if body is not None and "Content-Type" not in hdrs:
            hdrs.update(JSON)
        conn.request(method, path, body=data, headers=hdrs)
        reply = conn.getresponse()
        text = reply.read()
        got = {k.lower(): v for k, v in reply.getheaders()}
    finally:
        conn.close()
    kind = got.get("content-type", "")
    parsed: Any = json.loads(text) if "json" in kind and text else text.decode()
    return reply.status, got, parsed


def bearer(user: str, password: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {user}:{password}"}
