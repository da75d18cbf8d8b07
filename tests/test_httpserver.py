"""store.httpserver, the HTTP server of the worker and the exporter: each path's answer."""

from __future__ import annotations

import urllib.error
import urllib.request

import pytest

from eventfleet.store import httpserver


def get(port: int, path: str) -> tuple[int, bytes, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as resp:
            return resp.status, resp.read(), resp.headers["Content-Type"]
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), exc.headers["Content-Type"]


@pytest.mark.parametrize("ok", [True, False])
def test_the_three_paths_answer_what_the_process_says(ok: bool) -> None:
    server = httpserver.serve(
        "127.0.0.1",
        0,
        metrics=lambda: b"m 1\n",
        healthy=lambda: ok,
        ready=lambda: ok,
        name="test",
    )
    port = server.server_address[1]
    try:
        code, body, ctype = get(port, "/metrics?x=1")
        assert (code, body) == (200, b"m 1\n") and ctype.startswith("text/plain; version=")
        assert get(port, "/healthz")[:2] == ((200, b"ok\n") if ok else (503, b"stalled\n"))
        assert get(port, "/readyz")[:2] == ((200, b"ready\n") if ok else (503, b"not ready\n"))
        assert get(port, "/other")[:2] == (404, b"not found\n")
    finally:
        server.shutdown()
        server.server_close()


def test_without_a_readiness_readyz_is_not_served() -> None:
    server = httpserver.serve(
        "127.0.0.1", 0, metrics=lambda: b"", healthy=lambda: True, name="test"
    )
    port = server.server_address[1]
    try:
        assert get(port, "/healthz")[:2] == (200, b"ok\n")
        assert get(port, "/readyz")[0] == 404
    finally:
        server.shutdown()
        server.server_close()
