"""Real redis-server processes with the shipped ACL file (deploy/redis/users.acl), clients
logged in as its users, and the eventfleet command run as them.

Each server is started on a free port in a temp dir, with a temp copy of the ACL file, so the
users, key patterns and command lists are exactly the shipped ones. The copy gets one extra
user, `fixture-root`, used only to set up and clear data."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
from redis import exceptions as rx
from redis.backoff import NoBackoff
from redis.retry import Retry

from tests.helpers import IN_PROCESS_REFUSED, CliResult, cli

ROOT = Path(__file__).resolve().parents[1]


ACL_FILE = ROOT / "deploy" / "redis" / "users.acl"


SECRETS = ROOT / "deploy" / "redis" / "demo-secrets"


CONTRACTS = ROOT / "docs" / "CONTRACTS.md"


ROOT_USER, ROOT_PASSWORD = "fixture-root", "fixture-root-password"


META = "eventfleet:meta"


EVENTS = "eventfleet:{u0}:events"


ITEM_EVENTS = "eventfleet:{i7}:events"


INBOX = "eventfleet:{u0}:inbox"


ITEM_INBOX = "eventfleet:{i7}:inbox"


WRITTEN = "eventfleet:{u0}:written"


SNAPSHOT = "eventfleet:{u0}:snapshot"


LEASE = "eventfleet:{u0}:lease"


EPOCH = "eventfleet:{u0}:epoch"


OUTCOMES = "eventfleet:{u0}:outcomes"


DLQ = "eventfleet:{u0}:dlq"


POISON = "eventfleet:{u0}:poison"


WORKERS = "eventfleet:workers"


GROUP = "workers"


SCRIPT = "return redis.call('XLEN', KEYS[1])"


SCRIPT_SHA = hashlib.sha1(SCRIPT.encode()).hexdigest()


DEADLINE_S = 15.0


NO_RETRY = Retry(NoBackoff(), 0)


def password(role: str) -> str:
    return (SECRETS / f"eventfleet-{role}.password").read_text(encoding="utf-8").strip()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=DEADLINE_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def listening(proc: subprocess.Popen[bytes], port: int, deadline: float) -> bool:
    """True once `port` accepts connections; False if the server exits or the deadline passes."""
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            pass
        try:
            proc.wait(timeout=0.05)  # paces the loop and notices an early exit
            return False
        except subprocess.TimeoutExpired:
            continue
    return False


def start_redis(workdir: Path, args: Callable[[int], list[str]]) -> Server:
    """redis-server on a free loopback port; `args(port)` gives the port-dependent options."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not installed: apt-get install -y redis-server (7.0+)")
    for _ in range(5):
        port = free_port()
        log = workdir / f"redis-{port}.log"
        command = [binary, "--bind", "127.0.0.1", "--dir", str(workdir), "--save", "",
                   "--appendonly", "no", "--logfile", str(log), *args(port)]  # fmt: skip
        proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if listening(proc, port, time.monotonic() + DEADLINE_S):
            return Server(proc, port, log)
        Server(proc, port, log).stop()
        text = log.read_text(errors="replace") if log.exists() else ""
        if "Address already in use" not in text:
            pytest.fail(f"redis-server did not start ({' '.join(command)}):\n{text[-3000:]}")
    pytest.fail("no free port for redis-server after 5 tries")


def acl_copy(workdir: Path) -> Path:
    """The shipped ACL file plus the fixture's own superuser."""
    copy = workdir / "users.acl"
    text = ACL_FILE.read_text(encoding="utf-8").rstrip("\n")
    copy.write_text(f"{text}\nuser {ROOT_USER} on >{ROOT_PASSWORD} ~* &* +@all\n")
    return copy


def connect(port: int, role: str, secret: str | None = None, **extra: Any) -> redis.Redis:
    """A plain client logged in as `role` (admin, worker, producer or the fixture's root)."""
    if secret is None:
        secret = ROOT_PASSWORD if role == "root" else password(role)
    options: dict[str, Any] = {
        "socket_timeout": DEADLINE_S,
        "decode_responses": True,
        "retry": NO_RETRY,  # a refused login fails at once instead of after back-off
        **extra,
    }
    user = ROOT_USER if role == "root" else f"eventfleet-{role}"
    return redis.Redis(host="127.0.0.1", port=port, username=user, password=secret, **options)


def send(client: redis.Redis, *command: str) -> Any:
    return client.execute_command(*command)  # type: ignore[no-untyped-call]


def refused(client: redis.Redis, *command: str) -> bool:
    try:
        send(client, *command)
    except rx.NoPermissionError:
        return True
    return False


def eventfleet_binary() -> Path:
    binary = Path(sys.executable).parent / "eventfleet"
    if not binary.exists():
        pytest.fail(f"{binary} is missing: pip install -e .[dev] installs the eventfleet command")
    return binary


def cli_env(
    url: str, role: str, *, secret_file: Path | None = None, extra: dict[str, str] | None = None
) -> dict[str, str]:
    """The environment of one eventfleet process logged in as `role`, nothing inherited."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("EVENTFLEET_", "REDIS_"))}  # fmt: skip
    env.update(
        REDIS_URL=url,
        EVENTFLEET_NAMESPACE="eventfleet",
        EVENTFLEET_REDIS_USERNAME=f"eventfleet-{role}",
        REDIS_PASSWORD_FILE=str(secret_file or SECRETS / f"eventfleet-{role}.password"),
        EVENTFLEET_LOG_FORMAT="json",
        EVENTFLEET_METRICS_PORT="0",
    )
    env.update(extra or {})
    return env


def run_cli(env: dict[str, str], *args: str) -> CliResult:
    """``eventfleet <args>`` with ``env`` (a whole environment, as ``cli_env`` makes): in this
    process (click's runner, this process's own EVENTFLEET_ and REDIS_ variables unset), but
    as a process of its own for the commands that serve or start processes (``worker``...)."""
    command = next((a for a in args if not a.startswith("-")), "")
    if command in IN_PROCESS_REFUSED:
        done = subprocess.run(
            [str(eventfleet_binary()), *args],
            env=env, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        return CliResult(done.returncode, done.stdout, done.stderr)
    ours = {k: None for k in os.environ if k.startswith(("EVENTFLEET_", "REDIS_"))}
    return cli(*args, env={**ours, **env}, check=False)


def ok(result: CliResult) -> str:
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result.stdout


def wait_for(what: str, condition: Callable[[], bool], deadline_s: float) -> None:
    deadline = time.monotonic() + deadline_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {deadline_s:.0f}s waiting for {what}")
        time.sleep(0.05)


def fleet_round_trip(url: str, tmp_path: Path, tls: dict[str, str] | None = None) -> None:
    """init as admin, a topup as producer, a worker as the worker user, state as admin."""
    admin, producer = cli_env(url, "admin", extra=tls), cli_env(url, "producer", extra=tls)
    ok(run_cli(admin, "init", "--user-shards", "2", "--item-shards", "2"))
    ok(run_cli(producer, "produce", "topup", "--user", "1", "--amount", "500"))
    metrics_port = free_port()
    worker_env = cli_env(
        url, "worker", extra={**(tls or {}), "EVENTFLEET_METRICS_PORT": str(metrics_port)}
    )
    log_path = tmp_path / "worker.log"
    with log_path.open("w") as log:
        worker = subprocess.Popen(
            [str(eventfleet_binary()), "worker"], env=worker_env, stdout=log, stderr=log
        )
    try:

        def balance() -> Any:
            result = run_cli(admin, "state", "user", "1", "--json")
            return json.loads(ok(result))["balance"] if worker.poll() is None else "exited"

        wait_for("the topup to be applied", lambda: balance() in (500, "exited"), 60)
        assert worker.poll() is None, f"the worker exited:\n{log_path.read_text()}"
        probe = cli_env(url, "worker", extra={"EVENTFLEET_METRICS_PORT": str(metrics_port)})
        wait_for("eventfleet health", lambda: run_cli(probe, "health").returncode == 0, 30)
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            code = worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
            raise
    log_text = log_path.read_text()
    assert code == 0, f"the worker exited {code} after SIGTERM:\n{log_text}"
    assert "NOPERM" not in log_text and "permission" not in log_text.lower(), log_text
    assert run_cli(probe, "health").returncode != 0, "health still 0 after the worker stopped"
