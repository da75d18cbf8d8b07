"""Static membership with real worker processes: a member restarted under the same
EVENTFLEET_WORKER_ID takes its own shards back, and nothing else moves; also as the worker
StatefulSet rolls (highest ordinal first, each worker asking a stand-in Kubernetes API
whether it comes back, EVENTFLEET_REJOIN_CHECK=kubernetes)."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis

from eventfleet.chaos.paced import PacedProducer
from eventfleet.ledger.shards import ShardCounts
from eventfleet.local.fleet import LocalFleet
from eventfleet.local.redisserver import LocalRedis
from eventfleet.ops.status import is_idle
from eventfleet.producer.workload import mixed
from eventfleet.store.keys import Keys
from eventfleet.worker.assignment import assign
from tests.fleet_utils import log_lines, make_fleet, owners, setup_namespace
from tests.helpers import wait_for
from tests.kube_api import KubeApi
from tests.recompute import check_against_logs

IDS = ["worker-0", "worker-1", "worker-2", "worker-3"]


def epochs(r: redis.Redis, keys: Keys, counts: ShardCounts) -> dict[str, int]:
    """Each shard's lease epoch: it rises by one with every lease acquisition."""
    vals = r.mget([keys.epoch(s) for s in counts.all_shards()])
    return {s: int(v or 0) for s, v in zip(counts.all_shards(), vals, strict=True)}


def settled(r: redis.Redis, ns: str, counts: ShardCounts) -> bool:
    """Every shard held by its rendezvous target among the four ids."""
    return owners(r, ns, counts) == assign(counts.all_shards(), IDS)


@pytest.mark.parametrize("check", ["none", "kubernetes"])
def test_rolling_restart_moves_each_shard_at_most_once(
    check: str,
    r: redis.Redis,
    redis_server: LocalRedis,
    namespace: str,
    tmp_path: Path,
    fleet_factory: list[LocalFleet],
    request: pytest.FixtureRequest,
) -> None:
    counts = setup_namespace(r, namespace, 8, 8)
    keys = Keys(namespace)
    kube_env: dict[str, str] = {}
    order = IDS
    if check == "kubernetes":  # a StatefulSet "worker" of 4 replicas rolls from ordinal 3
        kube: KubeApi = request.getfixturevalue("kube_api")
        kube.replicas["worker"] = 4
        kube_env, order = kube.env(), list(reversed(IDS))
    # a generous grace: each restart below must come back well within it on a loaded machine
    fleet = make_fleet(
        redis_server.url,
        namespace,
        tmp_path,
        fleet_factory,
        EVENTFLEET_REJOIN_GRACE_MS="60000",
        **kube_env,
    )
    procs = {wid: fleet.start(worker_id=wid) for wid in IDS}
    wait_for(lambda: settled(r, namespace, counts), 60, "four workers to hold their shards")
    events = list(mixed(6000, seed=16, users=200, items=30))
    producer = PacedProducer(r, keys, counts, events, rate=1500, chunk=100)
    producer.start()
    before = epochs(r, keys, counts)
    restarted = []
    for wid in order:  # one at a time, as a rollout of stable names does
        held = {s for s, o in owners(r, namespace, counts).items() if o == wid}
        assert fleet.terminate(procs[wid], timeout=30) == 0
        if check == "kubernetes":
            (asked,) = [e for e in log_lines(procs[wid]) if e["event"] == "rejoin_check"]
            assert asked["returns"] is True, asked
        procs[wid] = fleet.start(worker_id=wid)
        restarted.append(procs[wid])
        wait_for(
            lambda wid=wid, held=held: (
                all(  # type: ignore[misc]
                    epochs(r, keys, counts)[s] > before[s] for s in held
                )
                and settled(r, namespace, counts)
            ),
            60,
            f"{wid} to take its shards back",
        )
    moves = {s: epochs(r, keys, counts)[s] - before[s] for s in counts.all_shards()}
    assert moves == dict.fromkeys(counts.all_shards(), 1), moves

    # each shard was taken back from its final snapshot: nothing replayed (the log line
    # follows the takeover, which follows the lease: wait for the last ones)
    def taken() -> list[dict[str, object]]:
        return [e for w in restarted for e in log_lines(w) if e["event"] == "lease_acquired"]

    wait_for(
        lambda: sorted(str(e["shard"]) for e in taken()) == sorted(counts.all_shards()),
        60,
        "a lease_acquired line per shard from the restarted workers",
    )
    taken_back = taken()
    assert all(e["replayed"] == 0 and e["restored"] for e in taken_back), taken_back
    producer.join(120)
    wait_for(lambda: is_idle(r, keys, counts), 120, "the fleet to become idle")
    check_against_logs(r, namespace, events)


def test_a_member_that_does_not_come_back_is_replaced_after_the_grace(
    r: redis.Redis,
    redis_server: LocalRedis,
    namespace: str,
    tmp_path: Path,
    fleet_factory: list[LocalFleet],
) -> None:
    counts = setup_namespace(r, namespace, 4, 4)
    fleet = make_fleet(
        redis_server.url, namespace, tmp_path, fleet_factory, EVENTFLEET_REJOIN_GRACE_MS="8000"
    )
    procs = {wid: fleet.start(worker_id=wid) for wid in IDS[:2]}
    members = IDS[:2]
    wait_for(
        lambda: owners(r, namespace, counts) == assign(counts.all_shards(), members),
        60,
        "two workers to hold their shards",
    )
    gone = {s for s, o in owners(r, namespace, counts).items() if o == IDS[0]}
    assert fleet.terminate(procs[IDS[0]], timeout=30) == 0
    suspended = [e for e in log_lines(procs[IDS[0]]) if e["event"] == "worker_suspended"]
    assert suspended and set(suspended[0]["shards"]) == gone
    # still its own during the grace: nobody else acquired them
    assert all(owners(r, namespace, counts)[s] == IDS[0] for s in gone)
    wait_for(
        lambda: set(owners(r, namespace, counts).values()) == {IDS[1]},
        60,
        "the remaining worker to take the shards after the grace",
    )
