"""Crash detection through Redis' view of connections (worker/liveness.py), with real
processes: a SIGKILLed worker's shards are taken over by breaking its leases (before their
TTL); a paused or partitioned worker keeps its connection and is still handled by the lease
TTL and fencing. Every test ends by recomputing every shard from its log.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from hypothesis import given
from hypothesis import strategies as st

from eventfleet.chaos.paced import PacedProducer
from eventfleet.local.fleet import LocalFleet, WorkerProc
from eventfleet.local.redisserver import LocalRedis
from eventfleet.ops.status import is_idle
from eventfleet.producer.workload import mixed
from eventfleet.store.keys import Keys
from eventfleet.worker.liveness import Liveness, Record, connected, dead_peers, pairs, parse_record
from tests.fleet_utils import log_lines, make_fleet, owners, setup_namespace
from tests.helpers import wait_for
from tests.recompute import check_against_logs

SLOW_TTL = {"EVENTFLEET_LEASE_TTL_MS": "5000", "EVENTFLEET_SNAPSHOT_INTERVAL_S": "2"}


def broke(w: WorkerProc, victim: WorkerProc, upto: int | None = None) -> set[str]:
    """Shards ``w`` acquired by breaking a lease of ``victim``."""
    return {
        str(e["shard"])
        for e in log_lines(w)[:upto]
        if e["event"] == "lease_acquired"
        and str(e.get("broke") or "").startswith(victim.worker_id + ":")
    }


def any_broken(ws: list[WorkerProc], upto: dict[str, int] | None = None) -> list[object]:
    return [
        e
        for w in ws
        for e in log_lines(w)[: (upto or {}).get(w.worker_id)]
        if e["event"] == "peer_dead" or (e["event"] == "lease_acquired" and e.get("broke"))
    ]


def settle(r: redis.Redis, ns: str, counts: object, ws: list[WorkerProc]) -> None:
    wait_for(
        lambda: set(owners(r, ns, counts).values()) == {w.worker_id for w in ws},  # type: ignore[arg-type]
        60,
        "every worker to own shards",
    )


def test_sigkill_is_seen_through_the_connection_and_its_leases_are_broken(
    r: redis.Redis,
    redis_server: LocalRedis,
    namespace: str,
    tmp_path: Path,
    fleet_factory: list[LocalFleet],
) -> None:
    counts = setup_namespace(r, namespace, 8, 8)
    fleet = make_fleet(redis_server.url, namespace, tmp_path, fleet_factory, **SLOW_TTL)
    ws = [fleet.start() for _ in range(3)]
    settle(r, namespace, counts, ws)
    events = list(mixed(6000, seed=17))
    producer = PacedProducer(r, Keys(namespace), counts, events, rate=2000, chunk=200)
    producer.start()
    wait_for(lambda: producer.published >= 1000, 30, "events in flight")
    victim, others = ws[0], ws[1:]
    held = {s for s, o in owners(r, namespace, counts).items() if o == victim.worker_id}
    assert held
    fleet.kill(victim)
    # taken by breaking its leases (they had seconds left), not by waiting for them to lapse
    wait_for(
        lambda: set().union(*(broke(w, victim) for w in others)) == held,
        60,
        "the dead worker's shards to be taken over by breaking its leases",
    )
    dead = [e for w in others for e in log_lines(w) if e["event"] == "peer_dead"]
    assert {e["peer"] for e in dead} == {victim.worker_id}
    producer.join(60)
    assert producer.error is None
    wait_for(lambda: is_idle(r, Keys(namespace), counts), 90, "the fleet to become idle")
    check_against_logs(r, namespace, events)


def test_without_the_liveness_check_a_sigkill_waits_for_the_lease_ttl(
    r: redis.Redis,
    redis_server: LocalRedis,
    namespace: str,
    tmp_path: Path,
    fleet_factory: list[LocalFleet],
) -> None:
    counts = setup_namespace(r, namespace, 4, 4)
    fleet = make_fleet(
        redis_server.url, namespace, tmp_path, fleet_factory, EVENTFLEET_LIVENESS_CHECK_MS="0"
    )
    ws = [fleet.start() for _ in range(2)]
    settle(r, namespace, counts, ws)
    held = {s for s, o in owners(r, namespace, counts).items() if o == ws[0].worker_id}
    fleet.kill(ws[0])
    wait_for(
        lambda: all(owners(r, namespace, counts)[s] == ws[1].worker_id for s in held),
        60,
        "the other worker to take over after the TTL",
    )
    assert any_broken([ws[1]]) == []
    assert r.zcard(Keys(namespace).live) == 0


@pytest.fixture
def proxy(redis_server: LocalRedis) -> Iterator[tuple[subprocess.Popen[str], int]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.tcpproxy", str(redis_server.port)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert proc.stdout is not None
    port = int(proc.stdout.readline())
    yield proc, port
    proc.send_signal(signal.SIGCONT)
    proc.kill()
    proc.wait()
    proc.stdout.close()


def test_partitioned_worker_keeps_its_connection_and_waits_for_the_ttl(
    r: redis.Redis,
    redis_server: LocalRedis,
    namespace: str,
    tmp_path: Path,
    fleet_factory: list[LocalFleet],
    proxy: tuple[subprocess.Popen[str], int],
) -> None:
    counts = setup_namespace(r, namespace, 8, 8)
    proc, port = proxy
    direct = make_fleet(redis_server.url, namespace, tmp_path, fleet_factory)
    behind = LocalFleet(
        f"redis://127.0.0.1:{port}/0",
        namespace,
        tmp_path / "logs-behind",
        env=direct.env,
        name="p",
    )
    fleet_factory.append(behind)
    a, b = behind.start(), direct.start()
    settle(r, namespace, counts, [a, b])
    events = list(mixed(5000, seed=19))
    producer = PacedProducer(r, Keys(namespace), counts, events, rate=2000, chunk=200)
    producer.start()
    wait_for(lambda: producer.published >= 1000, 30, "events in flight")
    held = {s for s, o in owners(r, namespace, counts).items() if o == a.worker_id}
    assert held
    proc.send_signal(signal.SIGSTOP)  # a partition: Redis still sees a's connections open
    wait_for(
        lambda: all(owners(r, namespace, counts)[s] == b.worker_id for s in held),
        60,
        "the other worker to take over the partitioned worker's shards",
    )
    healed_at = {w.worker_id: len(log_lines(w)) for w in (a, b)}
    assert any_broken([b], healed_at) == [], "a partitioned worker was taken for dead"
    proc.send_signal(signal.SIGCONT)
    producer.join(60)
    assert producer.error is None
    wait_for(lambda: is_idle(r, Keys(namespace), counts), 90, "the fleet to become idle")
    old = {
        (e["shard"], e["epoch"])
        for e in log_lines(a)[: healed_at[a.worker_id]]
        if e["event"] == "lease_acquired"
    }
    stale = [
        e
        for e in log_lines(a)[healed_at[a.worker_id] :]
        if e["event"] == "snapshot_written" and (e["shard"], e["epoch"]) in old
    ]
    assert stale == [], "a superseded worker wrote a snapshot"
    check_against_logs(r, namespace, events)


# ---- pure parts -------------------------------------------------------------------------
wids = st.from_regex(r"[A-Za-z0-9_.-]{1,20}", fullmatch=True)


@given(wids, st.integers(0, 2**40), st.integers(0, 2**45), st.sampled_from(["-", "10.0.0.1:7000"]))
def test_a_record_reads_back_as_written(wid: str, cid: int, ms: int, node: str) -> None:
    rec = Record(wid, cid, node, ms)
    assert parse_record(rec.member.encode(), float(ms)) == rec


@given(st.binary(max_size=40), st.one_of(st.binary(max_size=10), st.floats(allow_nan=True)))
def test_any_member_parses_or_is_ignored(member: bytes, score: object) -> None:
    rec = parse_record(member, score)
    assert rec is None or isinstance(rec, Record)


@given(st.dictionaries(wids, st.integers(1, 50), max_size=6), st.sets(st.integers(1, 50)))
def test_dead_peers_are_the_watched_whose_registered_connection_is_closed(
    watched: dict[str, int], open_ids: set[int]
) -> None:
    present = {cid: "x" for cid in open_ids}
    records = {w: Record(w, cid, "-", 0) for w, cid in watched.items()}
    assert dead_peers(watched, records, present) == sorted(
        w for w, cid in watched.items() if cid not in present
    )
    # a worker that registered again (a new connection) is not dead
    moved = {w: Record(w, cid + 100, "-", 0) for w, cid in watched.items()}
    assert dead_peers(watched, moved, present) == []


def test_records_from_before_our_connection_count_only_once_seen_connected(
    redis_server: LocalRedis, r: redis.Redis, namespace: str
) -> None:
    """A record older than our own registration may name a connection of an earlier Redis
    (ids restart): its absence proves nothing, until its id was seen connected by name."""
    keys = Keys(namespace)

    def named(name: str) -> redis.Redis:
        return redis.Redis.from_url(
            redis_server.url, single_connection_client=True, client_name=name
        )

    now_ms = int(r.time()[0]) * 1000
    r.zadd(keys.live, {"ghost 999999 -": now_ms - 1000})  # an id of no connection of this Redis
    # an old liveness id that now belongs to another connection of the same worker
    other = named("twin")
    r.zadd(keys.live, {f"twin {other.client_id()} -": now_ms - 1000})
    peer = named("live:peer")
    peer_id = int(peer.client_id())
    r.zadd(keys.live, {f"peer {peer_id} -": now_ms - 1000})
    me = Liveness("me", keys, 5000, 100, lambda: (named("live:me"), "-"))
    try:
        for _ in range(3):
            assert me.check().expelled == []
        other.close()  # never seen as a liveness connection: its absence proves nothing
        peer.close()  # seen connected as a liveness connection before: now it is a death
        verdict = wait_for(lambda: me.check().expelled, 10, "the peer to be found dead")
        assert verdict == ["peer"]
        assert r.zscore(keys.gone, "peer") is not None
        assert r.zscore(keys.live, "ghost 999999 -") is not None
        assert r.zcard(keys.live) == 3  # me, ghost and twin
    finally:
        me.reset()


def test_client_list_and_zrange_replies_in_both_protocols() -> None:
    reply = b"id=7 addr=127.0.0.1:1 name=w1\nid=12 addr=127.0.0.1:2 name=w2\n"
    assert connected(reply) == {7: "w1", 12: "w2"}
    assert connected(b"id=3 addr=x\n") == {3: ""}
    assert connected(b"") == {}
    assert pairs([b"a", b"1", b"b", b"2"]) == [(b"a", b"1"), (b"b", b"2")]
    assert pairs([[b"a", 1.0], [b"b", 2.0]]) == [(b"a", 1.0), (b"b", 2.0)]
