"""Running the docs' long-lived command lines for real (tests/test_docs_commands.py): a live
worker for lines that wait for one, processes that serve until SIGTERM, `eventfleet up`, and
commands started in the background because they take long but little CPU."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import redis

from eventfleet.ledger.shards import ShardCounts
from eventfleet.local.fleet import LocalFleet, WorkerProc
from eventfleet.local.redisserver import LocalRedis, free_port
from eventfleet.store.keys import Keys
from eventfleet.store.namespace import init_namespace
from tests.fleet_utils import FAST
from tests.helpers import wait_for

STOP_S = 60.0
"""How long a stopped (SIGTERM) process may take to finish."""


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without any EVENTFLEET_* setting, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("EVENTFLEET_")}
    return {**env, "EVENTFLEET_LOG_FORMAT": "json", **extra}


def http_ok(url: str, needle: str = "") -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as reply:
            return reply.status == 200 and needle in reply.read().decode(errors="replace")
    except (urllib.error.URLError, OSError):
        return False


@dataclass
class LiveFleet:
    """One real worker on a Redis of its own, namespace ``eventfleet`` (2 + 2 shards)."""

    redis: LocalRedis
    fleet: LocalFleet
    worker: WorkerProc
    metrics_port: int

    @property
    def url(self) -> str:
        return self.redis.url

    def close(self) -> None:
        self.fleet.stop_all(timeout=15)
        self.redis.close()


def start_live_fleet(workdir: Path) -> LiveFleet:
    redis_server = LocalRedis().start()
    client = redis.Redis.from_url(redis_server.url)
    init_namespace(client, Keys("eventfleet"), ShardCounts(2, 2))
    init_namespace(client, Keys("docs-load"), ShardCounts(2, 2))
    client.close()
    port = free_port()
    fleet = LocalFleet(
        redis_server.url,
        "eventfleet",
        workdir / "logs",
        env={**FAST, "EVENTFLEET_METRICS_PORT": str(port)},
    )
    worker = fleet.start(worker_id="docs-worker")
    live = LiveFleet(redis_server, fleet, worker, port)
    wait_for(
        lambda: http_ok(f"http://127.0.0.1:{port}/readyz"), 60, "the live worker to hold its shards"
    )
    return live


@dataclass
class Run:
    """A command line started as a process, its output in files."""

    proc: subprocess.Popen[bytes]
    out: Path
    err: Path

    def output(self) -> str:
        return self.out.read_text(errors="replace") + self.err.read_text(errors="replace")

    def stdout(self) -> str:
        return self.out.read_text(errors="replace")

    def stop(self) -> int:
        """SIGTERM, then the exit code."""
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=STOP_S)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def start(words: list[str], env: dict[str, str], workdir: Path, name: str) -> Run:
    """``eventfleet <words>`` as a process in ``workdir``."""
    workdir.mkdir(parents=True, exist_ok=True)
    out, err = workdir / f"{name}.out", workdir / f"{name}.err"
    with open(out, "wb") as o, open(err, "wb") as e:
        proc = subprocess.Popen(
            [sys.executable, "-m", "eventfleet", *words], env=env, cwd=workdir, stdout=o, stderr=e
        )
    return Run(proc, out, err)


def serve_then_stop(words: list[str], env: dict[str, str], url: str, needle: str, tmp: Path) -> str:
    """Start a serving command, wait until ``url`` answers 200 (with ``needle`` in the body),
    SIGTERM it and require exit 0; its output."""
    run = start(words, env, tmp, "serve")
    try:
        wait_for(
            lambda: http_ok(url, needle) or run.proc.poll() is not None, 60, f"{url} to answer"
        )
        assert run.proc.poll() is None, f"exited {run.proc.returncode}:\n{run.output()}"
        assert run.stop() == 0, run.output()
        return run.output()
    finally:
        run.kill()


def up_run(words: list[str], tmp: Path) -> str:
    """``eventfleet up ...``: with ``--exit-when-idle`` to its end; otherwise until its
    workers apply events, then SIGTERM (which finishes like q: stop, verify, clean up).
    Requires exit 0 (verify passed); the output."""
    run = start(words, clean_env(), tmp, "up")
    try:
        if "--exit-when-idle" in words:
            assert run.proc.wait(timeout=180) == 0, run.output()
            return run.output()
        wait_for(
            lambda: re.search(r"applied [1-9]", run.output()) or run.proc.poll() is not None,
            120,
            "`up` to apply events",
        )
        assert run.proc.poll() is None, f"exited {run.proc.returncode}:\n{run.output()}"
        assert run.stop() == 0, run.output()
        return run.output()
    finally:
        run.kill()


def redis_run(words: list[str], tmp: Path) -> None:
    """``eventfleet redis``, moved to a free port (the docs' line means 6379, the machine's):
    it must serve the commands that follow it in the README (init, a top-up, a read), then
    stop on SIGTERM with exit 0 and its temp dir gone."""
    port = free_port()
    run = start([*words, "--port", str(port)], clean_env(), tmp, "redis")
    try:
        wait_for(
            lambda: "Ctrl-C" in run.stdout() or run.proc.poll() is not None,
            30,
            "`eventfleet redis` to serve",
        )
        assert run.proc.poll() is None, f"exited {run.proc.returncode}:\n{run.output()}"
        url = f"redis://127.0.0.1:{port}/0"
        env = clean_env(REDIS_URL=url)
        for args in (["init"], ["produce", "topup", "--user", "7", "--amount", "1000"]):
            done = subprocess.run(
                [sys.executable, "-m", "eventfleet", *args],
                check=False,
                env=env,
                capture_output=True,
                timeout=60,
            )
            assert done.returncode == 0, done.stderr.decode()
        data = Path(re.search(r"data in (\S+),", run.stdout())[1])  # type: ignore[index]
        assert data.is_dir()
        assert run.stop() == 0, run.output()
        assert not data.exists(), "the temp dir outlived `eventfleet redis`"
    finally:
        run.kill()
