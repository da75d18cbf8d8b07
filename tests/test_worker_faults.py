"""The fleet under faults, with real processes: SIGKILL, SIGSTOP, SIGTERM, joins, restarts.

Each test ends by recomputing every shard from its log and comparing record by record.
"""

from __future__ import annotations

import random
import signal
import time
from pathlib import Path

import redis

from eventfleet.chaos.paced import PacedProducer
from eventfleet.ledger.codec import encode
from eventfleet.ledger.events import Topup
from eventfleet.ledger.shards import destination
from eventfleet.ledger.state import ShardState
from eventfleet.local.fleet import LocalFleet
from eventfleet.local.redisserver import LocalRedis
from eventfleet.ops.status import is_idle
from eventfleet.producer.client import Producer
from eventfleet.producer.workload import mixed
from eventfleet.store.keys import EVENT_FIELD, Keys
from tests.fleet_utils import (
    log_lines,
    make_fleet,
    owners,
    plant_crash_looping_entry,
    setup_namespace,
)
from tests.helpers import wait_for
from tests.recompute import check_against_logs
from tests.shipped import init_shipped, login


def wait_idle(r: redis.Redis, ns: str, counts: object, timeout: float = 90) -> None:
    wait_for(lambda: is_idle(r, Keys(ns), counts), timeout, "the fleet to become idle")  # type: ignore[arg-type]


def test_mixed_workload_survives_a_sigkill_every_second(
    r: redis.Redis,
    redis_server: LocalRedis,
    namespace: str,
    tmp_path: Path,
    fleet_factory: list[LocalFleet],
) -> None:
    counts = setup_namespace(r, namespace, 8, 8)
    fleet = make_fleet(redis_server.url, namespace, tmp_path, fleet_factory)
    for _ in range(3):
        fleet.start()
    events = list(mixed(20_000, seed=7, users=300, items=40))
    producer = PacedProducer(r, Keys(namespace), counts, events, rate=2000, chunk=200)
    producer.start()
    rng = random.Random(7)
    kills = 0
    kills_in_flight = 0
    while not producer.done or not is_idle(r, Keys(namespace), counts):
        time.sleep(1.0)  # the fault schedule: one SIGKILL a second (not a wait for a result)
        live = fleet.live()
        victim = rng.choice(live)
        held = sum(1 for o in owners(r, namespace, counts).values() if o == victim.worker_id)
        fleet.kill(victim)
        kills += 1
        if held and not producer.done:
            kills_in_flight += 1
        fleet.start()
        if kills > 60:
            break
    assert producer.error is None
    assert producer.published == len(events)
    wait_idle(r, namespace, counts)
    assert kills >= 5 and kills_in_flight >= 3, (kills, kills_in_flight)
    check_against_logs(r, namespace, events)


def test_paused_worker_writes_nothing_after_its_lease_expired(
    r: redis.Redis,
    redis_server: LocalRedis,
    namespace: str,
    tmp_path: Path,
    fleet_factory: list[LocalFleet],
) -> None:
    counts = setup_namespace(r, namespace, 16, 16)  # 32 shards: every worker wins some
    fleet = make_fleet(redis_server.url, namespace, tmp_path, fleet_factory)
    a, b = fleet.start(), fleet.start()
    wait_for(
        lambda: set(owners(r, namespace, counts).values()) == {a.worker_id, b.worker_id},
        30,
        "both workers to own shards",
    )
    events = list(mixed(6000, seed=3))
    producer = PacedProducer(r, Keys(namespace), counts, events, rate=3000, chunk=200)
    producer.start()
    wait_for(lambda: producer.published >= 1000, 30, "events in flight")
    held = {s for s, o in owners(r, namespace, counts).items() if o == a.worker_id}
    assert held
    a.proc.send_signal(signal.SIGSTOP)
    wait_for(
        lambda: all(owners(r, namespace, counts)[s] == b.worker_id for s in held),
        30,
        "the other worker to take over the paused worker's shards",
    )
    resumed_at = len(log_lines(a))
    # a paused worker keeps its connection: it is not taken for dead (worker/liveness.py),
    # its leases lapse with the TTL
    taken = [e for e in log_lines(b) if e["event"] in ("peer_dead", "lease_acquired")]
    assert not any(e.get("peer") or e.get("broke") for e in taken), taken
    a.proc.send_signal(signal.SIGCONT)
    producer.join(60)
    wait_idle(r, namespace, counts)
    after = log_lines(a)[resumed_at:]
    old = {
        (e["shard"], e["epoch"])
        for e in log_lines(a)[:resumed_at]
        if e["event"] == "lease_acquired"
    }
    # A snapshot the worker sent just before SIGSTOP (its lease still valid) is logged only
    # after SIGCONT; what must never happen is a write once it knows the lease is gone.
    lost: set[str] = set()
    stale_snaps = []
    for e in after:
        if e["event"] == "lease_lost":
            lost.add(e["shard"])
        elif e["event"] == "snapshot_written" and e["shard"] in lost:
            stale_snaps += [e] if (e["shard"], e["epoch"]) in old else []
    assert stale_snaps == [], "a superseded worker wrote a snapshot"
    assert any(e["event"] == "lease_lost" for e in after), "the resumed worker never noticed"
    check_against_logs(r, namespace, events)


def test_join_and_graceful_leave_move_shards_without_waiting_for_the_ttl(
    r: redis.Redis,
    redis_server: LocalRedis,
    namespace: str,
    tmp_path: Path,
    fleet_factory: list[LocalFleet],
) -> None:
    counts = setup_namespace(r, namespace, 16, 16)  # 32 shards: every worker wins some
    fleet = make_fleet(
        redis_server.url, namespace, tmp_path, fleet_factory, EVENTFLEET_LEASE_TTL_MS="5000"
    )
    ws = [fleet.start() for _ in range(3)]
    wait_for(
        lambda: set(owners(r, namespace, counts).values()) == {w.worker_id for w in ws},
        30,
        "three workers to share the shards",
    )
    events = list(mixed(8000, seed=5))
    producer = PacedProducer(r, Keys(namespace), counts, events, rate=2000, chunk=200)
    producer.start()
    wait_for(lambda: producer.published >= 1000, 30, "events in flight")
    fourth = fleet.start()
    wait_for(
        lambda: fourth.worker_id in owners(r, namespace, counts).values(),
        30,
        "the fourth worker to be handed shards",
    )
    leaving = ws[0]
    keys = Keys(namespace)
    held = {s for s, o in owners(r, namespace, counts).items() if o == leaving.worker_id}
    assert held
    t0 = time.monotonic()
    code = fleet.terminate(leaving, timeout=15)
    assert code == 0
    assert time.monotonic() - t0 < 10 + 1  # the drain deadline
    # released on the way out, not left to expire (the TTL here is 5 s)
    for s in held:
        v = r.get(keys.lease(s))
        assert v is None or not v.decode().startswith(leaving.worker_id + ":")
    wait_for(
        lambda: all(owners(r, namespace, counts)[s] not in (None, leaving.worker_id) for s in held),
        30,
        "the leaver's shards to be picked up",
    )
    producer.join(60)
    wait_idle(r, namespace, counts)
    handed = [e for e in log_lines(leaving) if e["event"] == "handed_over"]
    assert {e["shard"] for e in handed} >= held
    check_against_logs(r, namespace, events)


def test_fleet_restart_restores_snapshots_and_replays_only_the_tail(
    r: redis.Redis,
    redis_server: LocalRedis,
    namespace: str,
    tmp_path: Path,
    fleet_factory: list[LocalFleet],
) -> None:
    counts = setup_namespace(r, namespace)
    fleet = make_fleet(
        redis_server.url,
        namespace,
        tmp_path,
        fleet_factory,
        EVENTFLEET_SNAPSHOT_INTERVAL_S="3600",
        EVENTFLEET_STANDBYS="0",  # the snapshot path: a warm standby would have folded the tail
    )
    keys = Keys(namespace)
    first = list(mixed(3000, seed=11, prefix="a"))
    ws = [fleet.start() for _ in range(2)]
    Producer(r, keys, counts).publish(first)
    wait_idle(r, namespace, counts)
    for w in ws:
        assert fleet.terminate(w) == 0  # final snapshots on SIGTERM
    second = list(mixed(2000, seed=12, prefix="b"))
    ws = [fleet.start() for _ in range(2)]
    Producer(r, keys, counts).publish(second)
    wait_idle(r, namespace, counts)
    for w in ws:
        fleet.kill(w)  # no snapshots: the next owners must replay what came after
    tails = {}
    for s in counts.all_shards():
        snap = r.get(keys.snapshot(s))
        assert snap is not None
        last = ShardState.from_snapshot(snap, s).last_id
        tails[s] = len(r.xrange(keys.events(s), min=f"({last}", max="+"))
    total = sum(r.xlen(keys.events(s)) for s in counts.all_shards())
    assert 0 < sum(tails.values()) < total
    ws = [fleet.start() for _ in range(2)]

    def first_takeovers() -> dict[str, dict[str, object]]:
        """Each shard's first takeover by the new fleet (a later one follows a hand-over)."""
        found: dict[str, dict[str, object]] = {}
        events = [e for w in ws for e in log_lines(w) if e["event"] == "lease_acquired"]
        for e in sorted(events, key=lambda e: str(e["timestamp"])):
            found.setdefault(str(e["shard"]), e)
        return found

    firsts = wait_for(
        lambda: (f := first_takeovers()) and len(f) == len(tails) and f,
        30,
        "every shard taken over by the new fleet",
    )
    assert {s: e["replayed"] for s, e in firsts.items()} == tails
    assert all(e["restored"] for e in firsts.values())
    wait_idle(r, namespace, counts)
    check_against_logs(r, namespace, first + second)


def test_same_source_and_seq_published_twice_takes_effect_once(
    r: redis.Redis,
    redis_server: LocalRedis,
    namespace: str,
    tmp_path: Path,
    fleet_factory: list[LocalFleet],
) -> None:
    counts = setup_namespace(r, namespace)
    keys = Keys(namespace)
    fleet = make_fleet(redis_server.url, namespace, tmp_path, fleet_factory)
    fleet.start()
    ev = Topup(user_id=5, amount=700)
    stream = keys.events(destination(ev, counts))
    text = encode(ev, "p:retry-test", 1)
    r.xadd(stream, {EVENT_FIELD: text})
    r.xadd(stream, {EVENT_FIELD: text})  # a retried publish
    p = Producer(r, keys, counts)
    batch = [p.stamp(Topup(user_id=5, amount=1))]
    p.send(batch)
    p.send(batch)  # the whole chunk again, as after a lost reply
    wait_idle(r, namespace, counts)
    got = check_against_logs(r, namespace)
    assert got["users"]["5"] == {"balance": 701}


def test_malformed_entries_are_dead_lettered_and_the_shard_goes_on(
    r: redis.Redis,
    redis_server: LocalRedis,
    namespace: str,
    tmp_path: Path,
    fleet_factory: list[LocalFleet],
) -> None:
    from tests.helpers import cli_json

    counts = setup_namespace(r, namespace)
    keys = Keys(namespace)
    fleet = make_fleet(redis_server.url, namespace, tmp_path, fleet_factory)
    fleet.start()
    good = Topup(user_id=9, amount=300)
    shard = destination(good, counts)
    other = next(
        u for u in range(1, 100) if destination(Topup(user_id=u, amount=1), counts) != shard
    )
    bad = {
        "bad_json": b"{oops",
        "unknown_type": b'{"type":"refund","user_id":9,"source":"p:x","seq":1}',
        "invalid_event": b'{"type":"topup","user_id":9,"amount":-5,"source":"p:x","seq":2}',
        "missing": b'{"type":"topup","user_id":9,"source":"p:x","seq":3}',
        "wrong_shard": encode(Topup(user_id=other, amount=10), "p:x", 4).encode(),
    }
    stream = keys.events(shard)
    ids = {name: r.xadd(stream, {EVENT_FIELD: raw}).decode() for name, raw in bad.items()}
    r.xadd(stream, {b"other": b"no event field"})
    Producer(r, keys, counts).publish([good])
    wait_idle(r, namespace, counts)
    dead = cli_json(
        "dlq",
        "list",
        "--json",
        env={"REDIS_URL": redis_server.url, "EVENTFLEET_NAMESPACE": namespace},
    )
    by_entry = {d["entry_id"]: d for d in dead}
    assert by_entry[ids["bad_json"]]["reason"] == "bad_json"
    assert by_entry[ids["unknown_type"]]["reason"] == "unknown_type"
    assert by_entry[ids["invalid_event"]]["reason"] == "invalid_event"
    assert "amount" in by_entry[ids["invalid_event"]]["error"]
    assert by_entry[ids["missing"]]["reason"] == "invalid_event"
    assert "amount" in by_entry[ids["missing"]]["error"]
    assert by_entry[ids["wrong_shard"]]["reason"] == "wrong_shard"
    assert by_entry[ids["bad_json"]]["raw"] == "{oops"
    assert len(dead) == 6 and all(d["shard"] == shard for d in dead)
    got = check_against_logs(r, namespace, [good])
    assert got["users"] == {"9": {"balance": 300}}


def test_workers_ride_out_a_redis_restart(
    namespace: str, tmp_path: Path, fleet_factory: list[LocalFleet]
) -> None:
    """Redis as shipped (flags, ACL file, every process as its user), SIGKILLed under load."""
    server = LocalRedis(workdir=tmp_path / "redis", shipped=True, namespace=namespace).start()
    assert server.logins is not None
    try:
        counts = init_shipped(server, namespace)
        r, producer_r = login(server, "root"), login(server, "producer")
        fleet = make_fleet(
            server.url, namespace, tmp_path, fleet_factory, **server.logins.env("worker")
        )
        ws = [fleet.start() for _ in range(2)]
        events = list(mixed(6000, seed=21))
        producer = PacedProducer(producer_r, Keys(namespace), counts, events, rate=3000, chunk=200)
        producer.start()
        wait_for(lambda: producer.published >= 1500, 30, "events in flight")
        server.restart(kill=True)  # SIGKILL: appendfsync always keeps every acknowledged write
        producer.join(90)
        assert producer.error is None and producer.published == len(events)
        wait_idle(r, namespace, counts)
        assert all(w.alive for w in ws), "a worker died on a transient Redis error"
        # every connection died with the old process: the workers come back on new ones
        wait_for(
            lambda: {w.worker_id for w in ws} <= {c["name"] for c in r.client_list()},
            30,
            "every worker to reconnect",
        )
        check_against_logs(r, namespace, events)
        r.close()
        producer_r.close()
    finally:
        server.close()


def _draining(w: object) -> bool:
    return any(e["event"] == "draining" for e in log_lines(w))  # type: ignore[arg-type]


def test_second_sigterm_stops_hard_and_the_drain_deadline_holds(
    own_redis: LocalRedis, namespace: str, tmp_path: Path, fleet_factory: list[LocalFleet]
) -> None:
    r = redis.Redis.from_url(own_redis.url)
    counts = setup_namespace(r, namespace)
    fleet = make_fleet(
        own_redis.url,
        namespace,
        tmp_path,
        fleet_factory,
        EVENTFLEET_LEASE_TTL_MS="5000",
        EVENTFLEET_DRAIN_TIMEOUT_S="2",
    )
    a, b = fleet.start(), fleet.start()
    wait_for(
        lambda: set(owners(r, namespace, counts).values()) == {a.worker_id, b.worker_id},
        30,
        "both workers to own shards",
    )
    own_redis.stop()  # the drain now cannot finish: its Redis calls retry until their deadline
    a.proc.send_signal(signal.SIGTERM)
    wait_for(lambda: _draining(a), 10, "the first SIGTERM to start a drain")
    assert a.alive
    a.proc.send_signal(signal.SIGTERM)
    assert a.proc.wait(timeout=5) == 1
    assert any(e["event"] == "hard_stop" for e in log_lines(a))
    assert not any(e["event"] == "worker_stopped" for e in log_lines(a))
    b.proc.send_signal(signal.SIGTERM)  # one signal: the drain deadline (2 s) ends it
    assert b.proc.wait(timeout=10) == 1
    assert any(e["event"] == "drain_deadline_passed" for e in log_lines(b))


def test_an_entry_delivered_too_often_is_dead_lettered_not_applied(
    r: redis.Redis,
    redis_server: LocalRedis,
    namespace: str,
    tmp_path: Path,
    fleet_factory: list[LocalFleet],
) -> None:
    counts = setup_namespace(r, namespace)
    keys = Keys(namespace)
    shard, eid = plant_crash_looping_entry(r, keys, counts)
    after = Topup(user_id=12, amount=7)
    Producer(r, keys, counts).publish([after])
    fleet = make_fleet(redis_server.url, namespace, tmp_path, fleet_factory)
    fleet.start()
    wait_idle(r, namespace, counts)
    letters = r.xrange(keys.dlq(shard))
    assert [(f[b"entry_id"].decode(), f[b"reason"]) for _, f in letters] == [
        (eid, b"max_deliveries")
    ]
    got = check_against_logs(r, namespace)
    assert got["users"]["12"] == {"balance": 7}
