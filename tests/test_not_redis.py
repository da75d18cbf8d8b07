"""A REDIS_URL that names something else (here an HTTP server): one clear line, exit 2, for
every kind of process, and no traceback."""

from __future__ import annotations

import http.server
import os
import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest


@pytest.fixture
def http_url() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"redis://127.0.0.1:{server.server_address[1]}/0"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize(
    "args",
    [
        ("status",),
        ("init",),
        ("produce", "topup", "--user", "1", "--amount", "5"),
        ("worker",),
    ],
)
def test_a_url_that_is_not_redis_gets_one_line_and_exit_2(
    http_url: str, args: tuple[str, ...]
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EVENTFLEET_", "REDIS_"))}
    env.update(REDIS_URL=http_url, EVENTFLEET_METRICS_PORT="0", EVENTFLEET_LOG_FORMAT="json")
    done = subprocess.run(
        [sys.executable, "-m", "eventfleet", *args],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    output = done.stdout + done.stderr
    assert done.returncode == 2, output
    assert "Traceback" not in output
    lines = [ln for ln in output.splitlines() if ln.strip()]
    assert len(lines) == 1, output
    assert "does not speak the Redis protocol" in lines[0]
