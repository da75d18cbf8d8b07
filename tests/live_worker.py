"""Live worker processes for the observability tests: each serves /metrics, /healthz and
/readyz on a free loopback port; ``Scrape`` parses /metrics with prometheus_client's own
parser, as Prometheus would read it."""

from __future__ import annotations

import json
import os
import string
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import redis
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from eventfleet.ledger.shards import ShardCounts
from eventfleet.local.fleet import LocalFleet, WorkerProc
from eventfleet.local.redisserver import free_port
from eventfleet.ops.status import is_idle
from eventfleet.store.keys import GROUP, Keys
from eventfleet.worker.assignment import assign
from tests.fleet_utils import FAST, log_lines
from tests.helpers import wait_for
from tests.promql import KIND_SUFFIXES


@dataclass
class Scrape:
    families: dict[str, Metric]

    @classmethod
    def parse(cls, text: str) -> Scrape:
        return cls({f.name: f for f in text_string_to_metric_families(text)})

    def samples(self, name: str) -> list[Sample]:
        return [s for f in self.families.values() for s in f.samples if s.name == name]

    def total(self, name: str, **labels: str) -> float:
        return sum(s.value for s in self.samples(name) if labels.items() <= s.labels.items())

    def by(self, name: str, label: str) -> dict[str, float]:
        out: dict[str, float] = {}
        for s in self.samples(name):
            out[s.labels[label]] = out.get(s.labels[label], 0.0) + s.value
        return out

    def nonzero(self, name: str, label: str) -> dict[str, float]:
        return {k: v for k, v in self.by(name, label).items() if v}

    def exposed_names(self) -> set[str]:
        """Every series name this exposition offers, by each family's type."""
        names: set[str] = set()
        for f in self.families.values():
            names.update(f.name + suffix for suffix in KIND_SUFFIXES.get(f.type, ("",)))
            names.update(s.name for s in f.samples)
        return names


def http_status(port: int, path: str, timeout: float = 2.0) -> int | None:
    """The HTTP status of ``path``; None when nothing answers in time."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        code = int(exc.code)
        exc.close()
        return code
    except (urllib.error.URLError, OSError):  # refused, reset or timed out
        return None


def scrape(port: int) -> Scrape:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        return Scrape.parse(resp.read().decode())


@dataclass
class Live:
    """A worker process and the port of its /metrics, /healthz and /readyz."""

    proc: WorkerProc
    port: int

    @property
    def id(self) -> str:
        return self.proc.worker_id

    def get(self, path: str, timeout: float = 2.0) -> int | None:
        return http_status(self.port, path, timeout)

    def scrape(self) -> Scrape:
        return scrape(self.port)

    def logs(self) -> list[dict[str, Any]]:
        return log_lines(self.proc)

    def assert_json_lines(self) -> None:
        """Every line the worker wrote is one JSON object: no stray traceback or print."""
        for line in self.proc.log_path.read_text().splitlines():
            assert line.startswith("{") and json.loads(line), f"not a JSON line: {line!r}"

    def events(self, name: str) -> list[dict[str, Any]]:
        return [e for e in self.logs() if e["event"] == name]


T = TypeVar("T")


def until(cond: Callable[[], T | None], timeout: float, what: str) -> T:
    """``wait_for`` for conditions that return a value once it holds, None before."""
    got = wait_for(cond, timeout, what)
    assert got is not None
    return got


def count_range(r: redis.Redis, stream: str, after: str, upto: str = "+") -> int:
    """Entries of ``stream`` after id ``after`` (exclusive) up to ``upto`` (inclusive)."""
    entries: Any = r.xrange(stream, min=f"({after}", max=upto)
    return len(entries)


def fleet_of_two(
    url: str, ns: str, tmp: Path, fleets: list[LocalFleet], counts: ShardCounts, **env: str
) -> LocalFleet:
    """A fleet whose first two workers both get shards. Worker ids embed this process's pid,
    and rendezvous hashing gives one of two members every one of 8 shards 1 time in 128."""
    pid = os.getpid()
    name = next(
        n
        for n in string.ascii_lowercase
        if len(set(assign(counts.all_shards(), [f"{n}1-{pid}", f"{n}2-{pid}"]).values())) == 2
    )
    fleet = LocalFleet(url, ns, tmp / "logs", env={**FAST, **env}, name=name)
    fleets.append(fleet)
    return fleet


def start(fleet: LocalFleet, **env: str) -> Live:
    port = free_port()
    proc = fleet.start({"EVENTFLEET_METRICS_PORT": str(port), **env})
    return Live(proc, port)


def wait_ready(w: Live, timeout: float = 30) -> None:
    wait_for(lambda: w.get("/readyz") == 200, timeout, f"{w.id} to report ready")


def wait_idle(r: redis.Redis, ns: str, counts: ShardCounts, timeout: float = 60) -> None:
    wait_for(lambda: is_idle(r, Keys(ns), counts), timeout, "the fleet to become idle")


def gauge_by_shard(w: Live, name: str) -> dict[str, float]:
    return w.scrape().by(name, "shard")


def pending_by_consumer(r: redis.Redis, keys: Keys, counts: ShardCounts, consumer: str) -> int:
    n = 0
    for s in counts.all_shards():
        summary: Any = r.xpending(keys.events(s), GROUP)
        for c in summary["consumers"]:
            if c["name"].decode() == consumer:
                n += int(c["pending"])
    return n
