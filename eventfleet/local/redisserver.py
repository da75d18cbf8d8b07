"""A throwaway ``redis-server`` in a temp dir on a free loopback port (demo, tests, chaos).

Runs with ``appendonly yes`` and ``appendfsync always`` so it can be stopped and started
again on the same data, as a real deployment's Redis restarts. With ``shipped=True`` it runs
exactly as the compose file and the StatefulSet run it: their flags and the shipped ACL file
(fresh passwords; ``logins`` says how each role logs in), and the default user off.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import redis

from eventfleet.local.shipped import SHIPPED_FLAGS, Logins, write_acl

INSTALL_HINT = (
    "redis-server was not found on PATH. Install Redis 7 (Debian/Ubuntu: "
    "`sudo apt-get install -y redis-server`; macOS: `brew install redis`) and try again."
)


class RedisNotInstalled(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LocalRedis:
    def __init__(
        self,
        port: int | None = None,
        workdir: Path | None = None,
        extra_args: list[str] | None = None,
        *,
        shipped: bool = False,
        cluster_acl: bool = False,
        namespace: str = "eventfleet",
    ) -> None:
        """``shipped``: the shipped flags and ACL file (``cluster_acl``: with the rights each
        user needs on a Redis Cluster; its key patterns for ``namespace``)."""
        self.binary = shutil.which("redis-server")
        if self.binary is None:
            raise RedisNotInstalled(INSTALL_HINT)
        self.port = port or free_port()
        self._own_dir = workdir is None
        self.dir = workdir or Path(tempfile.mkdtemp(prefix="eventfleet-redis-"))
        self.extra_args = extra_args or []
        self.logins: Logins | None = None
        if shipped:
            self.dir.mkdir(parents=True, exist_ok=True)
            acl, self.logins = write_acl(self.dir, cluster=cluster_acl, namespace=namespace)
            self.extra_args = [*SHIPPED_FLAGS, "--aclfile", str(acl), *self.extra_args]
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> LocalRedis:
        self.proc = subprocess.Popen(
            [
                self.binary or "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.dir),
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
                "--protected-mode",
                "no",
                "--logfile",
                str(self.dir / "redis.log"),
                *self.extra_args,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # a terminal's Ctrl-C is for us, not for our Redis
        )
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        user = password = None
        if self.logins is not None:  # as the local root: ready means the AOF is loaded
            user, password = self.logins.user("root"), self.logins.password("root")
        client = redis.Redis(
            host="127.0.0.1",
            port=self.port,
            socket_connect_timeout=0.5,
            username=user,
            password=password,
        )
        try:
            while True:
                if self.proc is not None and self.proc.poll() is not None:
                    log = self.dir / "redis.log"
                    tail = log.read_text()[-500:] if log.exists() else ""
                    raise RuntimeError(f"redis-server exited ({self.proc.returncode}): {tail}")
                try:
                    if client.ping():
                        return
                except redis.AuthenticationError:
                    return  # up, and asking for credentials (started with an ACL file)
                except (redis.ConnectionError, redis.BusyLoadingError, redis.TimeoutError):
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError(f"redis-server on port {self.port} not ready in {timeout}s")
                time.sleep(0.02)
        finally:
            client.close()

    def stop(self, *, kill: bool = False) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            if kill:
                self.proc.kill()
            else:
                self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def restart(self, *, kill: bool = False) -> None:
        self.stop(kill=kill)
        self.start()

    def close(self) -> None:
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> LocalRedis:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
