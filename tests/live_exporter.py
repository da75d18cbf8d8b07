"""An ``eventfleet exporter`` process for the tests, on a free loopback port."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from eventfleet.local.redisserver import free_port
from tests.helpers import wait_for
from tests.live_worker import Scrape, http_status, scrape


@dataclass
class LiveExporter:
    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path

    def scrape(self) -> Scrape:
        return scrape(self.port)

    def gauge(self, name: str) -> dict[str, float]:
        """A per-shard gauge, by shard."""
        return self.scrape().by(name, "shard")

    def log(self) -> str:
        return self.log_path.read_text()


@contextmanager
def running_exporter(
    env: dict[str, str], log_dir: Path, interval_s: float = 0.2
) -> Iterator[LiveExporter]:
    """Start the exporter, wait for its /healthz, stop it (SIGTERM, then SIGKILL) after."""
    port = free_port()
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"exporter-{port}.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "eventfleet", "exporter", "--port", str(port)],
            env={
                **os.environ,
                **env,
                "EVENTFLEET_EXPORTER_INTERVAL_S": str(interval_s),
                "EVENTFLEET_LOG_FORMAT": "json",
            },
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    exporter = LiveExporter(proc, port, log_path)
    try:
        wait_for(
            lambda: proc.poll() is not None or http_status(port, "/healthz") == 200,
            30,
            "the exporter to serve /healthz",
        )
        assert proc.poll() is None, exporter.log()
        yield exporter
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
