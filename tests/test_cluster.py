"""The same fleet on Redis Cluster: real cluster nodes on loopback ports, real worker processes.

Three masters (``redis-cli --cluster create``) for the workload under SIGKILLed workers and the
malformed entries; three masters and three replicas for a master killed mid-run, after which
the replica is promoted and the fleet carries on. Each test ends with the record-by-record
check against a recomputation from the logs, through the cluster client.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from eventfleet.chaos.paced import PacedProducer
from eventfleet.ledger.events import Order
from eventfleet.ledger.shards import ShardCounts, destination
from eventfleet.local.cluster import LocalCluster
from eventfleet.local.fleet import LocalFleet
from eventfleet.local.redisserver import LocalRedis, RedisNotInstalled
from eventfleet.ops.status import is_idle
from eventfleet.producer.client import NotReplicated, Producer
from eventfleet.producer.workload import mixed
from eventfleet.store.connection import connect, is_cluster
from eventfleet.store.keys import EVENT_FIELD, Keys
from eventfleet.store.namespace import read_counts
from eventfleet.store.settings import Settings
from eventfleet.worker.scripts import Scripts
from tests import test_worker_faults as faults
from tests.fleet_utils import log_lines, make_fleet, setup_namespace
from tests.helpers import cli, cli_json, cli_process, wait_for
from tests.recompute import check_against_logs


def _start(replicas: int) -> LocalCluster:
    try:
        return LocalCluster(masters=3, replicas=replicas, node_timeout_ms=1000).start()
    except RedisNotInstalled as exc:  # fail loudly, never skip
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    """Three masters, no replicas, shared by the tests of this module (one namespace each)."""
    c = _start(replicas=0)
    yield c
    c.close()


@pytest.fixture
def replicated() -> Iterator[LocalCluster]:
    """Three masters with one replica each, for this test alone (it kills a master)."""
    c = _start(replicas=1)
    yield c
    c.close()


def client(url: str) -> redis.Redis:
    return connect(Settings(redis_url=url), timeout=10.0)


@pytest.fixture
def rc(cluster: LocalCluster) -> Iterator[redis.Redis]:
    r = client(cluster.urls[1])  # any node will do
    yield r
    r.close()


def owners(r: redis.Redis, ns: str, counts: ShardCounts) -> dict[str, str | None]:
    """Lease holders, one GET per shard in a pipeline (MGET cannot span slots)."""
    keys = Keys(ns)
    pipe = r.pipeline(transaction=False)
    for s in counts.all_shards():
        pipe.get(keys.lease(s))
    vals: list[Any] = list(pipe.execute())
    return {
        s: (v.decode().rpartition(":")[0] if v else None)
        for s, v in zip(counts.all_shards(), vals, strict=True)
    }


def wait_idle(r: redis.Redis, ns: str, counts: ShardCounts, timeout: float = 90) -> None:
    wait_for(lambda: is_idle(r, Keys(ns), counts), timeout, "the fleet to become idle")


def test_connect_detects_a_cluster_from_any_node(
    cluster: LocalCluster, redis_server: LocalRedis
) -> None:
    for url in cluster.urls:
        r = client(url)
        assert is_cluster(r)
        r.close()
    single = client(redis_server.url)
    assert not is_cluster(single)
    single.close()
    other_db = cluster.urls[0].rsplit("/", 1)[0] + "/3"
    bad = cli("status", env={"REDIS_URL": other_db}, check=False)
    assert bad.returncode == 1 and "Redis Cluster has only database 0" in bad.stderr


def test_mixed_workload_survives_a_sigkill_every_second_on_a_cluster(
    cluster: LocalCluster,
    rc: redis.Redis,
    namespace: str,
    tmp_path: Path,
    fleet_factory: list[LocalFleet],
) -> None:
    counts = setup_namespace(rc, namespace, 8, 8)
    keys = Keys(namespace)
    masters = {cluster.master_of(keys.events(s)).port for s in counts.all_shards()}
    assert len(masters) == 3, "the shards should spread over the three masters"
    fleet = make_fleet(cluster.urls[0], namespace, tmp_path, fleet_factory)
    for _ in range(3):
        fleet.start()
    wait_for(lambda: None not in owners(rc, namespace, counts).values(), 30, "every shard owned")
    events = list(mixed(8000, seed=17, users=300, items=40))
    producer = PacedProducer(rc, Keys(namespace), counts, events, rate=1500, chunk=200)
    producer.start()
    rng = random.Random(17)
    kills = kills_in_flight = 0
    while not producer.done or not is_idle(rc, keys, counts):
        time.sleep(1.0)  # the fault schedule: one SIGKILL a second (not a wait for a result)
        victim = rng.choice(fleet.live())
        held = sum(1 for o in owners(rc, namespace, counts).values() if o == victim.worker_id)
        fleet.kill(victim)
        kills += 1
        if held and not producer.done:
            kills_in_flight += 1
        fleet.start()
        if kills > 40:
            break
    assert producer.error is None
    assert producer.published == len(events)
    wait_idle(rc, namespace, counts)
    assert kills >= 3 and kills_in_flight >= 2, (kills, kills_in_flight)
    check_against_logs(rc, namespace, events)
    env = {"REDIS_URL": cluster.urls[2], "EVENTFLEET_NAMESPACE": namespace}
    report = cli_json("verify", "--json", env=env)
    assert report["ok"] and report["quiescent"], report["findings"]
    status = cli_json("status", "--json", env=env)
    assert status["totals"]["idle"] and status["totals"]["shards"] == 16
    state = cli_json("state", "all", "--json", env=env)
    assert len(state["orders"]) == sum(1 for e in events if isinstance(e, Order))


@pytest.mark.fleet
def test_chaos_runs_against_a_cluster_node(cluster: LocalCluster) -> None:
    done = cli_process(
        "chaos", "--redis", cluster.urls[2], "--faults", "kill,pause,scale", "--rounds", "1",
        "--events", "2000", "--json", timeout=240,
    )  # fmt: skip
    report = json.loads(done.stdout)
    assert report["ok"], report["verify"]


def test_malformed_entries_are_dead_lettered_on_a_cluster(
    cluster: LocalCluster,
    rc: redis.Redis,
    namespace: str,
    tmp_path: Path,
    fleet_factory: list[LocalFleet],
) -> None:
    # the single-node test as it is, with the cluster client and a cluster node's URL
    faults.test_malformed_entries_are_dead_lettered_and_the_shard_goes_on(
        rc,
        cluster,  # type: ignore[arg-type]  (it only reads .url)
        namespace,
        tmp_path,
        fleet_factory,
    )
    # re-drive sends the wrong-shard letter home: another slot, perhaps another master
    counts = read_counts(rc, Keys(namespace))
    env = {"REDIS_URL": cluster.urls[1], "EVENTFLEET_NAMESPACE": namespace}
    out = cli("dlq", "redrive", "--reason", "wrong_shard", env=env).stdout
    assert "re-drove 1 dead letters" in out
    wait_idle(rc, namespace, counts)
    got = check_against_logs(rc, namespace)
    assert len(got["users"]) == 2 and got["users"]["9"] == {"balance": 300}
    (other,) = set(got["users"]) - {"9"}
    state = cli_json("state", "user", other, "--json", env=env)
    assert state == {"user_id": int(other), "balance": 10}


@pytest.mark.parametrize("worker_wait", [0, 1], ids=["async", "workers-wait"])
def test_fleet_carries_on_after_a_master_fails_over_to_its_replica(
    worker_wait: int,
    replicated: LocalCluster,
    namespace: str,
    tmp_path: Path,
    fleet_factory: list[LocalFleet],
) -> None:
    """With ``workers-wait`` the workers WAIT for a replica after each batch's effects too
    (EVENTFLEET_WAIT_REPLICAS=1), so their writes stall while the new master has no replica."""
    r = client(replicated.urls[0])
    counts = setup_namespace(r, namespace, 8, 8)
    keys = Keys(namespace)
    fleet = make_fleet(
        replicated.urls[1],
        namespace,
        tmp_path,
        fleet_factory,
        EVENTFLEET_WAIT_REPLICAS=str(worker_wait),
    )
    ws = [fleet.start() for _ in range(3)]
    wait_for(lambda: None not in owners(r, namespace, counts).values(), 30, "every shard owned")
    events = list(mixed(6000, seed=23, users=300, items=40))
    producer = PacedProducer(r, Keys(namespace), counts, events, rate=1500, chunk=200)
    producer.producer.wait_replicas = 1  # each chunk on a replica before it counts as sent
    producer.start()
    wait_for(lambda: producer.published >= 1500, 30, "events in flight")
    victim = replicated.master_of(keys.events("u0"))
    before = {i.port: i for i in replicated.topology()}
    replica = next(i for i in before.values() if i.master_id == before[victim.port].node_id)
    replicated.kill(victim)  # SIGKILL a master mid-run
    replicated.wait_ok(60)  # its replica was promoted: every slot served again
    after = {i.port: i for i in replicated.topology()}
    assert after[replica.port].role == "master" and after[replica.port].slots > 0
    # the killed node comes back as a replica of its successor, so WAIT 1 is answered again
    replicated.restart(victim)
    replicated.wait_ok(60)
    producer.join(120)
    assert producer.error is None, repr(producer.error)
    assert producer.published == len(events)
    wait_idle(r, namespace, counts)
    assert all(w.alive for w in ws), "a worker died during the failover"
    noticed = [
        e
        for w in ws
        for e in log_lines(w)
        if e["event"] in ("redis_retry", "redis_unavailable", "lease_lost")
    ]
    assert noticed, "the failover was never noticed"
    check_against_logs(r, namespace, events)
    r.close()


def test_wait_replicas_waits_on_every_master_the_chunk_went_to(
    replicated: LocalCluster, namespace: str, tmp_path: Path, fleet_factory: list[LocalFleet]
) -> None:
    r = client(replicated.urls[2])
    counts = setup_namespace(r, namespace, 8, 8)
    keys = Keys(namespace)
    events = list(mixed(600, seed=5))
    masters = {replicated.master_of(keys.events(destination(e, counts))).port for e in events}
    assert len(masters) == 3
    assert Producer(r, keys, counts, wait_replicas=1).publish(events, chunk=200) == 600
    # each master has one replica: asking for two is refused once the retry time is up
    p = Producer(r, keys, counts, wait_replicas=2, wait_timeout_ms=50, retry_for_s=0.5)
    with pytest.raises(NotReplicated, match="of 2 replicas"):
        p.publish(events[:10])
    env = {"REDIS_URL": replicated.urls[3], "EVENTFLEET_NAMESPACE": namespace}
    out = cli("produce", "--wait-replicas", "1", "topup", "--user", "4", "--amount", "7", env=env)
    assert "published topup" in out.stdout
    # a worker asked for two replicas never counts a batch's effects as written
    fleet = make_fleet(
        replicated.urls[0], namespace, tmp_path, fleet_factory, EVENTFLEET_WAIT_REPLICAS="2"
    )
    w = fleet.start()
    wait_for(
        lambda: any(
            e["event"] == "redis_retry"
            and e["operation"] == "write_effects"
            and "ShortOfReplicas" in e["error"]
            for e in log_lines(w)
        ),
        30,
        "the worker to wait in vain for a second replica",
    )
    assert not is_idle(r, keys, counts)
    r.close()


@pytest.mark.parametrize("backend", ["single", "cluster"])
def test_fenced_read_hands_over_what_a_lost_reply_delivered(
    backend: str, r: redis.Redis, rc: redis.Redis, namespace: str
) -> None:
    """A read whose reply was lost, then sent again by the client on its own, must not step
    over the entries the first one delivered."""
    client_ = rc if backend == "cluster" else r
    setup_namespace(client_, namespace, 1, 1)
    keys = Keys(namespace)
    scripts = Scripts.register(client_)
    stream, lease, inbox = keys.events("u0"), keys.lease("u0"), keys.inbox("u0")
    client_.set(lease, "w1:1")
    first = [client_.xadd(stream, {EVENT_FIELD: f"e{i}"}) for i in range(3)]
    # the lost reply: these three are now pending for w1, unseen
    client_.xreadgroup("workers", "w1", {stream: ">"}, count=3)
    later = [client_.xadd(stream, {EVENT_FIELD: f"f{i}"}) for i in range(2)]

    def read(last_applied: str) -> list[bytes]:
        got = scripts.fenced_read(
            client_, lease=lease, events=stream, inbox=inbox, token="w1:1", consumer="w1",
            count=10, start=">", applied_to=last_applied, move_limit=10,
        )  # fmt: skip
        return [eid for eid, _fields in got]

    assert read("0-0") == first
    assert read(first[1].decode()) == first[2:]  # the first two were applied already
    assert read(first[2].decode()) == later  # nothing of ours left unapplied: new entries


def test_resharding_plan_moves_a_live_ledger_to_more_shards(
    cluster: LocalCluster,
    rc: redis.Redis,
    namespace: str,
    tmp_path: Path,
    fleet_factory: list[LocalFleet],
) -> None:
    """docs/SCALING.md's plan, step by step: quiet cut, export, seed, compare, dual writes."""
    old, new = namespace, f"{namespace}-x"
    old_counts = setup_namespace(rc, old, 4, 4)
    fleet = make_fleet(cluster.urls[0], old, tmp_path, fleet_factory)
    fleet.start(), fleet.start()
    Producer(rc, Keys(old), old_counts).publish(mixed(3000, seed=31, prefix="a"))
    wait_idle(rc, old, old_counts)  # the cut: producers stopped, every saga settled
    env_old = {"REDIS_URL": cluster.urls[1], "EVENTFLEET_NAMESPACE": old}
    env_new = {"REDIS_URL": cluster.urls[2], "EVENTFLEET_NAMESPACE": new}
    cut = tmp_path / "cut.json"
    seeds = cli("reshard", "export", "--cut", str(cut), env=env_old)
    assert "sold-out items are not carried over" in seeds.stderr
    (tmp_path / "seed.jsonl").write_text(seeds.stdout)
    cli("init", "--user-shards", "16", "--item-shards", "16", env=env_new)
    cli("produce", "file", str(tmp_path / "seed.jsonl"), env=env_new)
    new_counts = read_counts(rc, Keys(new))
    fleet_new = make_fleet(cluster.urls[0], new, tmp_path / "new", fleet_factory)
    fleet_new.start(), fleet_new.start()
    wait_idle(rc, new, new_counts)
    out = cli("reshard", "compare", "--cut", str(cut), env=env_new).stdout
    assert ": 0 differences" in out, out
    # dual writes: every event after the cut goes to both namespaces; each stays correct
    both = [Producer(rc, Keys(old), old_counts), Producer(rc, Keys(new), new_counts)]
    second = list(mixed(2000, seed=32, prefix="b"))
    for i in range(0, len(second), 250):
        for p in both:
            p.publish(second[i : i + 250])
    wait_idle(rc, old, old_counts)
    wait_idle(rc, new, new_counts)
    for env in (env_old, env_new):
        report = cli_json("verify", "--json", env=env)
        assert report["ok"] and report["quiescent"], report["findings"]
    got = check_against_logs(rc, new)
    orders = {e.order_id for e in second if isinstance(e, Order)}
    assert set(got["orders"]) == orders


@pytest.mark.fleet
def test_up_cluster_runs_the_system_on_a_throwaway_cluster() -> None:
    done = cli_process(
        "up", "--cluster", "--events", "2000", "--exit-when-idle", "--json", timeout=180
    )
    summary = json.loads(done.stdout)
    assert summary["verified"] and summary["idle"], summary
    assert summary["events"] == 2000 and sum(summary["outcomes"].values()) > 0
    refused = cli_process("up", "--cluster", "--redis", "redis://127.0.0.1:1/0", check=False)
    assert refused.returncode == 2 and "--cluster starts its own cluster" in refused.stderr


def test_slots_moved_between_masters_mid_run(
    namespace: str, tmp_path: Path, fleet_factory: list[LocalFleet]
) -> None:
    """Every slot of one master moves to another while the fleet applies a workload: the
    clients follow ASK and MOVED, nothing is lost or applied twice."""
    c = _start(replicas=0)
    try:
        r = client(c.urls[0])
        counts = setup_namespace(r, namespace, 8, 8)
        keys = Keys(namespace)
        fleet = make_fleet(c.urls[1], namespace, tmp_path, fleet_factory)
        ws = [fleet.start() for _ in range(3)]
        events = list(mixed(6000, seed=43, users=300, items=40))
        producer = PacedProducer(r, Keys(namespace), counts, events, rate=1500, chunk=200)
        producer.start()
        wait_for(lambda: producer.published >= 1000, 30, "events in flight")
        where = {s: c.master_of(keys.events(s)).port for s in counts.all_shards()}
        busiest = max(set(where.values()), key=list(where.values()).count)
        source, target = c.node(busiest), next(n for n in c.live() if n.port != busiest)
        c.move_slots(source, target, count=next(
            i.slots for i in c.topology() if i.port == busiest
        ))  # fmt: skip
        moved = [s for s in counts.all_shards() if c.master_of(keys.events(s)) is target]
        assert len(moved) > sum(1 for p in where.values() if p == target.port)
        producer.join(120)
        assert producer.error is None and producer.published == len(events)
        wait_idle(r, namespace, counts)
        assert all(w.alive for w in ws)
        check_against_logs(r, namespace, events)
        r.close()
    finally:
        c.close()


def test_the_exporter_reads_every_shard_across_the_masters(rc: redis.Redis, namespace: str) -> None:
    """One exporter pass through the cluster client: its pipelines span every master."""
    from eventfleet.exporter.read import NamespaceReader

    counts = setup_namespace(rc, namespace)
    keys = Keys(namespace)
    events = list(mixed(400, seed=5))
    Producer(rc, keys, counts).publish(events)
    rc.xadd(keys.dlq("i2"), {"reason": "bad_json"})
    reading = NamespaceReader(rc, keys).read()
    assert reading.unreadable == [] and reading.shard_count == len(counts.all_shards())
    assert sum(s.lag for s in reading.shards) == len(events)
    assert all(s.lag_seconds >= 0 and not s.owned for s in reading.shards)
    assert {s.shard: s.dead_letters for s in reading.shards if s.dead_letters} == {"i2": 1}
