"""What a newcomer meets in the first hour (issue 27): a second worker on one host, exit
codes of mistyped input, dead letters that never decode, every bad line of a file, an order
that is not there, a health probe of a dead port."""

from __future__ import annotations

import socket

import pytest

from store.settings import Settings
from worker.health import HealthState
from worker.main import serve_metrics


def test_a_second_worker_on_the_default_port_serves_on_a_free_one() -> None:
    health = HealthState(stale_after_s=5)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = int(taken.getsockname()[1])
        settings = Settings(metrics_host="127.0.0.1", metrics_port=port)
        server = serve_metrics(health, settings, fallback=True)
        try:
            got = int(server.server_address[1])
            assert got not in (port, 0)
        finally:
            server.shutdown()
            server.server_close()
        with pytest.raises(OSError):  # a port set on purpose must be that port
            serve_metrics(health, settings, fallback=False)
