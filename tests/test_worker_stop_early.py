"""A worker stopped (SIGTERM) before its loop runs, here while it waits for `eventfleet init`,
holds nothing yet: it exits 0 at once, not killed by the signal (a chaos run's last `kill`
fault starts a replacement that the run's end may stop while it is still starting)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from eventfleet.local.redisserver import LocalRedis
from tests.helpers import wait_for


def test_sigterm_while_starting_exits_0(
    redis_server: LocalRedis, namespace: str, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EVENTFLEET_", "REDIS_"))}
    env.update(
        REDIS_URL=redis_server.url,
        EVENTFLEET_NAMESPACE=namespace,  # never initialised: the worker waits for it
        EVENTFLEET_METRICS_PORT="0",
        EVENTFLEET_LOG_FORMAT="json",
    )
    log = tmp_path / "worker.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "eventfleet.worker"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for(lambda: "waiting_for_namespace" in log.read_text(), 60, "the worker to wait")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0, log.read_text()
        assert "Traceback" not in log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
