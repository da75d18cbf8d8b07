"""``eventfleet api`` as a process of its own on a free loopback port, for the bench, the
chaos run with HTTP clients and the tests: started, waited on until ``/readyz`` answers 200,
stopped with SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from eventfleet.local.redisserver import free_port


class ApiNotReady(RuntimeError):
    """The API process did not become ready in time (its log's tail says why)."""


class LocalApi:
    def __init__(
        self,
        redis_url: str,
        namespace: str,
        log_path: Path,
        *,
        env: dict[str, str] | None = None,
        args: tuple[str, ...] = (),
    ) -> None:
        self.redis_url = redis_url
        self.namespace = namespace
        self.log_path = log_path
        self.env = env or {}
        self.args = args
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> LocalApi:
        env = {
            **os.environ,
            "REDIS_URL": self.redis_url,
            "EVENTFLEET_NAMESPACE": self.namespace,
            "EVENTFLEET_LOG_FORMAT": "json",
            **self.env,
        }
        argv = [sys.executable, "-m", "eventfleet", "api", "--host", "127.0.0.1"]
        argv += ["--port", str(self.port), *self.args]
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                break
            try:
                with urllib.request.urlopen(self.url + "/readyz", timeout=2) as reply:
                    if reply.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.05)
        tail = self.log_path.read_text(errors="replace")[-2000:]
        raise ApiNotReady(f"eventfleet api not ready within {timeout:g} s:\n{tail}")

    def stop(self, timeout: float = 40.0) -> int:
        """SIGTERM, then wait: the exit code (SIGKILL after ``timeout``)."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def __enter__(self) -> LocalApi:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


__all__ = ["ApiNotReady", "LocalApi"]
