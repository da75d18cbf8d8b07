"""Worker processes on this machine: start, kill, pause, stop (demo, chaos, tests, bench)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class WorkerProc:
    worker_id: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    started: float = field(default_factory=time.monotonic)

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None


class LocalFleet:
    """Starts ``python -m eventfleet.worker`` processes with the given environment."""

    def __init__(
        self,
        redis_url: str,
        namespace: str,
        logdir: Path,
        env: dict[str, str] | None = None,
        name: str = "w",
    ) -> None:
        self.redis_url = redis_url
        self.namespace = namespace
        self.logdir = logdir
        self.env = env or {}
        self.name = name
        self.workers: list[WorkerProc] = []
        self._n = 0
        logdir.mkdir(parents=True, exist_ok=True)

    def start(
        self, extra_env: dict[str, str] | None = None, worker_id: str | None = None
    ) -> WorkerProc:
        """Start one worker; ``worker_id`` restarts a member under the id it had (static
        membership), otherwise each process gets a new one."""
        self._n += 1
        wid = worker_id or f"{self.name}{self._n}-{os.getpid()}"
        env = {
            **os.environ,
            "REDIS_URL": self.redis_url,
            "EVENTFLEET_NAMESPACE": self.namespace,
            "EVENTFLEET_WORKER_ID": wid,
            "EVENTFLEET_METRICS_PORT": "0",
            "EVENTFLEET_LOG_FORMAT": "json",
            **self.env,
            **(extra_env or {}),
        }
        # a restarted member writes a log of its own, beside the earlier process's
        log_path = self.logdir / (f"{wid}.{self._n}.log" if worker_id else f"{wid}.log")
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "eventfleet.worker"],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        w = WorkerProc(wid, proc, log_path)
        self.workers.append(w)
        return w

    def live(self) -> list[WorkerProc]:
        return [w for w in self.workers if w.alive]

    def kill(self, w: WorkerProc) -> None:
        w.proc.send_signal(signal.SIGKILL)
        w.proc.wait()

    def pause(self, w: WorkerProc) -> None:
        w.proc.send_signal(signal.SIGSTOP)

    def resume(self, w: WorkerProc) -> None:
        w.proc.send_signal(signal.SIGCONT)

    def terminate(self, w: WorkerProc, timeout: float = 30.0) -> int:
        w.proc.send_signal(signal.SIGTERM)
        return w.proc.wait(timeout=timeout)

    def stop_all(self, timeout: float = 30.0) -> None:
        for w in self.live():
            w.proc.send_signal(signal.SIGCONT)
            w.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for w in self.workers:
            try:
                w.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                w.proc.kill()
                w.proc.wait()
