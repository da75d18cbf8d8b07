"""Real network partitions (tests/netns.py): one worker in a network namespace of its own,
joined to the Redis by a veth pair; the other worker and the producer on loopback.

- A silent partition (the link drops every packet, no RST): Redis still sees the
  partitioned worker's connections open, so the liveness fast path must not fire; its shards
  move only once its leases lapse (the lease TTL), and when the link heals it is fenced.
- A partition that Redis does see (its side of every connection aborted while the link is
  down): the fast path takes the shards at once, from a worker that is still running, and
  fencing alone keeps that worker from writing anything stale when the link heals.

Both end with a record-by-record recomputation of every shard from its log.
"""

from __future__ import annotations

import shlex
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import redis

from eventfleet.chaos.paced import PacedProducer
from eventfleet.local.fleet import LocalFleet, WorkerProc
from eventfleet.local.redisserver import LocalRedis
from eventfleet.ops.status import is_idle
from eventfleet.producer.workload import mixed
from eventfleet.store.keys import Keys
from eventfleet.store.namespace import read_counts
from eventfleet.worker.liveness import connection_name
from tests.fleet_utils import FAST, log_lines, owners, setup_namespace
from tests.helpers import wait_for
from tests.netns import Link, leftovers, unavailable, veth_namespace
from tests.recompute import check_against_logs

WHY_NOT = unavailable()
pytestmark = pytest.mark.skipif(WHY_NOT is not None, reason=f"no real partition: {WHY_NOT}")

ENV = {**FAST, "EVENTFLEET_LEASE_TTL_MS": "5000", "EVENTFLEET_SNAPSHOT_INTERVAL_S": "2"}
"""A 5 s lease TTL: the fast path acts within a few 100 ms liveness checks, far inside it."""


REFUSED = {"fenced read refused", "lease renewal refused", "snapshot refused: lease no longer ours"}
"""``lease_lost`` reasons that are Redis refusing a superseded token (worker/ownership.py)."""
LAPSED = {
    "lease deadline passed without a renewal",
    "effects could not be written before the lease deadline",
}
"""``lease_lost`` reasons that are the worker's own clock (its lease deadline passed)."""


@dataclass
class Net:
    link: Link
    server: LocalRedis
    r: redis.Redis
    ns: str
    inside: LocalFleet
    """Workers in the namespace, on ``link.host_addr``."""
    outside: LocalFleet
    """Workers in the root namespace, on 127.0.0.1."""

    python: Path
    """An interpreter that runs in the namespace (a script: ``ip netns exec`` and the real one)."""

    def start_inside(self) -> WorkerProc:
        """A worker in the namespace: ``LocalFleet.start`` with ``self.python`` as interpreter
        (the script execs, so the process is the worker itself, as signals need)."""
        with mock.patch.object(sys, "executable", str(self.python)):
            return self.inside.start()


@pytest.fixture
def net(tmp_path: Path, namespace: str) -> Iterator[Net]:
    with veth_namespace() as link:
        server = LocalRedis(extra_args=["--bind", "127.0.0.1", link.host_addr]).start()
        r = redis.Redis.from_url(server.url)
        url = f"redis://{link.host_addr}:{server.port}/0"
        inside = LocalFleet(url, namespace, tmp_path / "logs-inside", env=ENV, name="p")
        outside = LocalFleet(server.url, namespace, tmp_path / "logs", env=ENV)
        python = tmp_path / "python-inside"
        argv = " ".join(shlex.quote(a) for a in link.command([sys.executable]))
        python.write_text(f'#!/bin/sh\nexec {argv} "$@"\n')
        python.chmod(0o755)
        try:
            yield Net(link, server, r, namespace, inside, outside, python)
        finally:
            link.heal()  # a failed test may leave it cut: let the workers drain
            for f in (inside, outside):
                f.stop_all(timeout=15)
            r.close()
            server.close()


def acquisitions(w: WorkerProc, since: int = 0, upto: int | None = None) -> list[dict[str, Any]]:
    return [e for e in log_lines(w)[since:upto] if e["event"] == "lease_acquired"]


def liveness_clients(r: redis.Redis, w: WorkerProc) -> list[str]:
    """Addresses of ``w``'s liveness connections as Redis sees them."""
    clients: Any = r.client_list()
    return [c["addr"] for c in clients if c.get("name") == connection_name(w.worker_id)]


@dataclass
class Pair:
    """The worker to be partitioned (``a``, holding ``held``), the other one (``b``), and a
    producer with events in flight."""

    a: WorkerProc
    b: WorkerProc
    producer: PacedProducer
    events: list[Any]
    held: set[str]
    cut_at: int = 0
    """Lines of ``a``'s log before the cut."""
    b_at: int = 0
    """Lines of ``b``'s log before the cut."""

    def cut(self, net: Net) -> None:
        self.cut_at, self.b_at = len(log_lines(self.a)), len(log_lines(self.b))
        net.link.cut()

    def since_cut(self) -> list[dict[str, Any]]:
        """``b``'s log lines since the cut."""
        return log_lines(self.b)[self.b_at :]


def start_pair(net: Net) -> Pair:
    counts = setup_namespace(net.r, net.ns, 8, 8)
    a, b = net.start_inside(), net.outside.start()
    wait_for(
        lambda: set(owners(net.r, net.ns, counts).values()) == {a.worker_id, b.worker_id},
        60,
        "both workers to own shards",
    )
    assert liveness_clients(net.r, a)[0].startswith(net.link.ns_addr + ":")
    events = list(mixed(5000, seed=23))
    producer = PacedProducer(net.r, Keys(net.ns), counts, events, rate=1500, chunk=150)
    producer.start()
    wait_for(lambda: producer.published >= 1000, 30, "events in flight")
    held = {s for s, o in owners(net.r, net.ns, counts).items() if o == a.worker_id}
    assert held
    return Pair(a, b, producer, events, held)


def finish(net: Net, p: Pair) -> list[str]:
    """After the heal: ``a`` drops every lease it held and writes no snapshot under any of
    them; the fleet, ``a`` included, gets idle, and every shard recomputed from its log
    matches what the workers wrote. Returns why ``a`` dropped each of those leases."""
    a, producer, cut = p.a, p.producer, p.cut_at
    keys = Keys(net.ns)
    counts = read_counts(net.r, keys)
    before = {(e["shard"], e["epoch"]) for e in acquisitions(a, upto=cut)}
    wait_for(
        lambda: (
            {s for s, _ in before}
            <= {e["shard"] for e in log_lines(a)[cut:] if e["event"] == "lease_lost"}
        ),
        60,
        "the partitioned worker to drop the leases it held",
    )
    producer.join(60)
    assert producer.error is None
    wait_for(
        lambda: a.worker_id in owners(net.r, net.ns, counts).values(),
        60,
        "the healed worker to own shards again",
    )
    wait_for(lambda: is_idle(net.r, keys, counts), 90, "the fleet to become idle")
    stale = [
        e
        for e in log_lines(a)[cut:]
        if e["event"] in ("snapshot_written", "handed_over") and (e["shard"], e["epoch"]) in before
    ]
    assert stale == [], "the partitioned worker wrote a snapshot under a lease it had lost"
    check_against_logs(net.r, net.ns, p.events)
    return [
        e["reason"]
        for e in log_lines(a)[cut:]
        if e["event"] == "lease_lost" and (e["shard"], e["epoch"]) in before
    ]


def broken_by(w: WorkerProc, victim: WorkerProc, since: int) -> set[str]:
    """Shards ``w`` took by breaking a lease of ``victim`` (found dead through the liveness
    check), from line ``since`` of its log."""
    return {
        str(e["shard"])
        for e in acquisitions(w, since)
        if str(e.get("broke") or "").startswith(victim.worker_id + ":")
    }


def test_a_silent_partition_fails_over_after_the_lease_ttl_and_the_worker_is_fenced(
    net: Net,
) -> None:
    p = start_pair(net)
    p.cut(net)
    counts = read_counts(net.r, Keys(net.ns))
    wait_for(
        lambda: {owners(net.r, net.ns, counts)[s] for s in p.held} == {p.b.worker_id},
        60,
        "the other worker to take over the partitioned worker's shards",
    )
    # No fast path: nobody found it dead, and every lease moved without being broken, that
    # is after it lapsed in Redis (acquire takes a held lease only by breaking it)
    assert [e for e in p.since_cut() if e["event"] == "peer_dead"] == []
    assert [e for e in acquisitions(p.b, p.b_at) if e.get("broke")] == []
    # ... because Redis still sees its liveness connection open: no RST crossed the cut
    assert any(x.startswith(net.link.ns_addr + ":") for x in liveness_clients(net.r, p.a))
    assert p.a.alive
    net.link.heal()
    assert set(finish(net, p)) <= REFUSED | LAPSED


def test_a_partition_redis_sees_is_taken_for_a_crash_and_fencing_keeps_the_worker_out(
    net: Net,
) -> None:
    p = start_pair(net)
    p.cut(net)
    assert net.link.abort_from_host() >= 2  # at least its liveness and its main connection
    what = "the other worker to break the leases of the worker found dead"
    wait_for(lambda: broken_by(p.b, p.a, p.b_at) == p.held, 60, what)
    assert {e["peer"] for e in p.since_cut() if e["event"] == "peer_dead"} == {p.a.worker_id}
    assert p.a.alive  # taken for dead while it runs: fencing alone keeps it out now
    net.link.heal()  # at once, while it still believes it holds its leases
    reasons = finish(net, p)
    # Which fence stopped it depends on what it was doing at the cut: with a request on the
    # wire, the heal brings a reset at once and Redis refuses its old token; waiting for a
    # reply that was lost, it hears nothing until its socket timeout, and its own lease
    # deadline has passed by then. Either way nothing else.
    assert set(reasons) <= REFUSED | LAPSED, reasons


def test_the_namespace_and_the_pair_are_removed_even_when_the_test_fails() -> None:
    seen: list[Link] = []
    with pytest.raises(RuntimeError, match="boom"), veth_namespace() as link:
        seen.append(link)
        assert leftovers(link) == [link.ns, link.host_if]
        raise RuntimeError("boom")
    assert leftovers(seen[0]) == []
