"""A namespace on the redis-server that runs the shipped ACL file, used the documented way:
``init``, ``state``, ``verify`` and ``dlq`` as the admin user, ``produce`` as the producer,
workers as the worker user (tests/secure_redis.py starts the server). Commands run in this
process (click's runner, each role's environment and nothing else of ours); workers and
``popen``'s background commands are processes of their own."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import redis

from eventfleet.ledger.bundle import split
from eventfleet.local.fleet import LocalFleet
from tests.fleet_utils import FAST
from tests.helpers import CliResult, cli
from tests.secure_redis import cli_env, connect, eventfleet_binary

DEADLINE_S = 240.0
"""Generous: the machine is shared, and every call starts a Python process."""


class AclStack:
    def __init__(self, port: int, tmp: Path, fleets: list[LocalFleet]) -> None:
        self.port = port
        self.url = f"redis://127.0.0.1:{port}/0"
        self.env = {role: cli_env(self.url, role) for role in ("admin", "producer", "worker")}
        self.tmp = tmp
        self.fleets = fleets
        self.fleet: LocalFleet | None = None

    def client(self, role: str) -> redis.Redis:
        """A client logged in as ``role`` (bytes replies, as the product's own clients)."""
        return connect(self.port, role, decode_responses=False)

    def run(self, role: str, *args: str) -> CliResult:
        """``eventfleet <args>`` as ``role``, in this process: the role's variables, and every
        other EVENTFLEET_ or REDIS_ variable of this process unset for the call."""
        ours = {k: None for k in os.environ if k.startswith(("EVENTFLEET_", "REDIS_"))}
        env: dict[str, str | None] = {**ours, **self.env[role]}
        return cli(*args, env=env, check=False)

    def ok(self, role: str, *args: str) -> str:
        result = self.run(role, *args)
        assert result.returncode == 0, (
            f"eventfleet {' '.join(args)} as {role}: exit {result.returncode}\n"
            f"{result.stdout}\n{result.stderr}"
        )
        return result.stdout

    def popen(self, role: str, *args: str) -> subprocess.Popen[bytes]:
        """A background eventfleet command; its output goes to ``<tmp>/bg-<n>.log``."""
        log = self.tmp / f"bg-{len(list(self.tmp.glob('bg-*.log')))}.log"
        with log.open("wb") as out:
            return subprocess.Popen(
                [str(eventfleet_binary()), *args], env=self.env[role],
                stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip

    def init(self, *args: str) -> None:
        self.ok("admin", "init", *args)

    def workers(self, n: int = 2) -> LocalFleet:
        if self.fleet is None:
            self.fleet = LocalFleet(
                self.url, "eventfleet", self.tmp / "logs", env={**self.env["worker"], **FAST}
            )
            self.fleets.append(self.fleet)
        for _ in range(n):
            self.fleet.start()
        return self.fleet

    def idle(self) -> None:
        self.ok("admin", "status", "--wait-idle", "--timeout", str(DEADLINE_S))

    def verify(self) -> dict[str, Any]:
        doc: dict[str, Any] = json.loads(self.run("admin", "verify", "--json").stdout)
        return doc

    def state(self) -> dict[str, Any]:
        doc: dict[str, Any] = json.loads(self.ok("admin", "state", "all", "--json"))
        return doc

    def event_count(self, root: redis.Redis, shards: list[str]) -> int:
        """Events landed in Redis: in the shard logs, or waiting in their inboxes (whose
        first element is the head, not an event); a bundle counts its events."""
        n = 0
        for s in shards:
            logged: Any = root.xrange(f"eventfleet:{{{s}}}:events")
            waiting: Any = root.lrange(f"eventfleet:{{{s}}}:inbox", 1, -1)
            texts = [f[b"event"] for _, f in logged if b"event" in f] + list(waiting)
            n += sum(len(split(t)) for t in texts)
        return n
