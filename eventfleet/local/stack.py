"""The docker-compose services as local processes, for ``eventfleet up`` and the demo.

The processes mirror compose's services one to one:

==========  ==============================================================================
redis       a throwaway ``redis-server`` in a temp dir (``LocalRedis``: appendonly, fsync
            always, noeviction), a throwaway 3-master Redis Cluster (``--cluster``:
            ``LocalCluster``, the same options on each node), or the server given with
            ``--redis``
init        ``eventfleet init``, run to completion before anything else starts
worker xN   ``python -m eventfleet.worker`` (the same as ``eventfleet worker``), through
``LocalFleet``
producer    ``eventfleet produce load --events E [--rate R] --seed S``
==========  ==============================================================================

The workers get a short lease TTL (``LEASE_TTL_MS``) and snapshot interval so that a kill or
a pause shows within seconds instead of after the production defaults' 5 s and 30 s.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import uuid
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from eventfleet.ledger.events import Order
from eventfleet.local.cluster import LocalCluster
from eventfleet.local.fleet import LocalFleet
from eventfleet.local.redisserver import LocalRedis
from eventfleet.producer.workload import mixed

LEASE_TTL_MS = 2000
"""Lease TTL of the workers started here: a killed worker's shards move within ~2 s."""
SNAPSHOT_INTERVAL_S = 5.0
DEFAULT_RATE = 500.0
ENDLESS = 1_000_000_000
"""Events a ``--rate`` run without ``--events`` asks the producer for: in effect, until q."""
COUNT_ORDERS_UP_TO = 200_000


class UpError(RuntimeError):
    """Something ``up`` needs failed to start; the message says what."""


@dataclass(frozen=True)
class UpConfig:
    workers: int = 3
    events: int | None = None
    rate: float | None = None
    redis_url: str | None = None
    cluster: bool = False
    """Start a throwaway 3-master Redis Cluster instead of one redis-server."""
    namespace: str | None = None
    seed: int = 1
    users: int = 200
    items: int = 50
    lease_ttl_ms: int = LEASE_TTL_MS
    snapshot_interval_s: float = SNAPSHOT_INTERVAL_S

    @property
    def effective_rate(self) -> float:
        """0 (as fast as possible) for ``--events`` alone, else the rate asked or the default."""
        if self.rate is not None:
            return self.rate
        return 0.0 if self.events is not None else DEFAULT_RATE

    def produce_args(self) -> list[str]:
        args = ["produce", "load", "--events", str(self.events or ENDLESS)]
        args += ["--seed", str(self.seed), "--users", str(self.users), "--items", str(self.items)]
        if self.effective_rate:
            args += ["--rate", f"{self.effective_rate:g}"]
        return args

    @cached_property
    def expected_orders(self) -> int | None:
        """Orders in the seeded workload (it is deterministic); None for an endless or a very
        large run, where counting them first would delay the start."""
        if self.events is None or self.events > COUNT_ORDERS_UP_TO:
            return None
        work = mixed(self.events, seed=self.seed, users=self.users, items=self.items)
        return sum(1 for ev in work if isinstance(ev, Order))


class Stack:
    """The processes, their temp dir and their logs; ``close`` leaves nothing behind."""

    def __init__(self, cfg: UpConfig) -> None:
        self.cfg = cfg
        self.dir = Path(tempfile.mkdtemp(prefix="eventfleet-up-"))
        self.logs = self.dir / "logs"
        self.logs.mkdir()
        self.redis: LocalRedis | LocalCluster | None = None
        self.url = cfg.redis_url or ""
        # A shared Redis gets a fresh namespace: a second run's order ids would collide.
        self.namespace = cfg.namespace or (
            "eventfleet" if cfg.redis_url is None else f"up-{uuid.uuid4().hex[:8]}"
        )
        self.fleet: LocalFleet | None = None
        self.producer: subprocess.Popen[bytes] | None = None
        self.producer_log = self.logs / "producer.log"

    def start_redis(self) -> None:
        if self.cfg.redis_url is not None:
            return
        workdir = self.dir / "redis"
        workdir.mkdir()
        args = ["--maxmemory-policy", "noeviction"]
        if self.cfg.cluster:
            self.redis = LocalCluster(workdir=workdir, extra_args=args).start()
        else:
            self.redis = LocalRedis(workdir=workdir, extra_args=args).start()
        self.url = self.redis.url

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "REDIS_URL": self.url,
            "EVENTFLEET_NAMESPACE": self.namespace,
            "EVENTFLEET_LOG_FORMAT": "json",
            "EVENTFLEET_METRICS_PORT": "0",
        }

    def command(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        """Run one ``eventfleet`` command to completion against this stack."""
        return subprocess.run(
            [sys.executable, "-m", "eventfleet", *args],
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def init(self) -> str:
        """``eventfleet init``; returns what it said."""
        done = self.command("init")
        if done.returncode != 0:
            raise UpError(f"eventfleet init failed: {(done.stderr or done.stdout).strip()}")
        return done.stdout.strip()

    def start_fleet(self, n: int) -> LocalFleet:
        env = {
            "EVENTFLEET_LEASE_TTL_MS": str(self.cfg.lease_ttl_ms),
            "EVENTFLEET_SNAPSHOT_INTERVAL_S": f"{self.cfg.snapshot_interval_s:g}",
        }
        self.fleet = LocalFleet(self.url, self.namespace, self.logs, env=env)
        for _ in range(n):
            self.fleet.start()
        return self.fleet

    def start_producer(self) -> None:
        with open(self.producer_log, "wb") as out:
            self.producer = subprocess.Popen(
                [sys.executable, "-m", "eventfleet", *self.cfg.produce_args()],
                env=self.env(),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # a Ctrl-C on the terminal is ours to handle
            )

    def redis_lost(self) -> bool:
        """True when a redis-server we started has exited (we never stop one before close)."""
        if isinstance(self.redis, LocalCluster):
            return len(self.redis.live()) < len(self.redis.nodes)
        return self.redis is not None and (
            self.redis.proc is None or self.redis.proc.poll() is not None
        )

    def stop_producer(self, timeout: float = 10.0) -> None:
        p = self.producer
        if p is None or p.poll() is not None:
            return
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()

    def close(self) -> None:
        """SIGTERM to every process still running, Redis stopped, the temp dir removed."""
        try:
            self.stop_producer()
            if self.fleet is not None:
                self.fleet.stop_all(timeout=20)
        finally:
            if self.redis is not None:
                self.redis.close()
            shutil.rmtree(self.dir, ignore_errors=True)
