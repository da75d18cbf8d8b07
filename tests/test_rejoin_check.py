"""Static membership on a StatefulSet (``EVENTFLEET_REJOIN_CHECK=kubernetes``), with real
worker processes named like StatefulSet pods and a TLS stand-in for the Kubernetes API
(tests/kube_api.py): a scale-down's SIGTERM (ordinal at or past the replica count) hands the
shards over at once instead of holding them for the grace; a rollout's SIGTERM keeps them for
the restarted pod; an API that refuses the question makes the member leave."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis

from eventfleet.ledger.shards import ShardCounts
from eventfleet.local.fleet import LocalFleet, WorkerProc
from eventfleet.local.redisserver import LocalRedis
from eventfleet.store.keys import Keys
from eventfleet.store.settings import Settings
from eventfleet.worker.assignment import assign
from eventfleet.worker.rejoin import RejoinUnknown, pod_ordinal, will_return
from tests.fleet_utils import log_lines, make_fleet, owners, setup_namespace
from tests.helpers import wait_for
from tests.kube_api import KubeApi
from tests.test_static_membership import epochs

STS = "eventfleet-worker"
IDS = [f"{STS}-{n}" for n in range(4)]
GRACE_MS = "120000"
"""Far longer than the test waits: shards that moved did not wait out the grace."""


@pytest.fixture
def kube(kube_api: KubeApi) -> KubeApi:
    kube_api.replicas[STS] = 4
    return kube_api


def events(w: WorkerProc, name: str) -> list[dict[str, object]]:
    return [e for e in log_lines(w) if e["event"] == name]


def held_by(r: redis.Redis, ns: str, counts: ShardCounts, wid: str) -> set[str]:
    return {s for s, o in owners(r, ns, counts).items() if o == wid}


def settled(r: redis.Redis, ns: str, counts: ShardCounts, ids: list[str]) -> bool:
    return owners(r, ns, counts) == assign(counts.all_shards(), ids)


def test_scale_down_hands_over_and_a_rollout_keeps_the_shards(
    r: redis.Redis,
    redis_server: LocalRedis,
    namespace: str,
    tmp_path: Path,
    fleet_factory: list[LocalFleet],
    kube: KubeApi,
) -> None:
    counts = setup_namespace(r, namespace, 4, 4)
    keys = Keys(namespace)
    fleet = make_fleet(
        redis_server.url,
        namespace,
        tmp_path,
        fleet_factory,
        EVENTFLEET_REJOIN_GRACE_MS=GRACE_MS,
        **kube.env(),
    )
    procs = {wid: fleet.start(worker_id=wid) for wid in IDS}
    wait_for(lambda: settled(r, namespace, counts, IDS), 60, "four workers to hold their shards")

    # scale-down 4 -> 3: the StatefulSet removes ordinal 3, after lowering its replicas
    kube.replicas[STS] = 3
    gone = held_by(r, namespace, counts, IDS[3])
    assert gone
    assert fleet.terminate(procs[IDS[3]], timeout=30) == 0
    # at its exit its leases are released and it has left the member set: no grace to wait
    assert not held_by(r, namespace, counts, IDS[3])
    assert r.zscore(keys.workers, IDS[3]) is None
    (check,) = events(procs[IDS[3]], "rejoin_check")
    assert (check["ordinal"], check["replicas"], check["returns"]) == (3, 3, False)
    assert events(procs[IDS[3]], "worker_stopped") and not events(procs[IDS[3]], "worker_suspended")
    assert kube.requests == [f"/apis/apps/v1/namespaces/eventfleet/statefulsets/{STS}/scale"]
    wait_for(lambda: settled(r, namespace, counts, IDS[:3]), 60, "three workers to settle")

    # a rollout (replicas unchanged) restarts ordinal 1 under the same name: it keeps its
    # shards through the restart and takes them back; nothing else moves
    before = epochs(r, keys, counts)
    kept = held_by(r, namespace, counts, IDS[1])
    assert fleet.terminate(procs[IDS[1]], timeout=30) == 0
    (check,) = events(procs[IDS[1]], "rejoin_check")
    assert check["returns"] is True
    (suspended,) = events(procs[IDS[1]], "worker_suspended")
    assert set(suspended["shards"]) == kept  # type: ignore[call-overload]
    assert held_by(r, namespace, counts, IDS[1]) == kept
    assert r.zscore(keys.workers, IDS[1]) is not None
    procs[IDS[1]] = fleet.start(worker_id=IDS[1])
    wait_for(
        lambda: (
            all(epochs(r, keys, counts)[s] > before[s] for s in kept)
            and settled(r, namespace, counts, IDS[:3])
        ),
        60,
        f"{IDS[1]} to take its shards back",
    )
    moved = {s: n - before[s] for s, n in epochs(r, keys, counts).items()}
    assert moved == {s: int(s in kept) for s in counts.all_shards()}, moved

    # the API refuses (RBAC missing, say): the member cannot tell, so it leaves
    kube.refuse = True
    assert fleet.terminate(procs[IDS[2]], timeout=30) == 0
    (failed,) = events(procs[IDS[2]], "rejoin_check_failed")
    assert "403" in str(failed["error"])
    assert events(procs[IDS[2]], "worker_stopped")
    assert not held_by(r, namespace, counts, IDS[2])
    assert r.zscore(keys.workers, IDS[2]) is None


def test_pod_names_and_unusable_settings() -> None:
    assert pod_ordinal("eventfleet-worker-12") == ("eventfleet-worker", 12)
    for bad in ("worker", "eventfleet-worker-x", "-3"):
        with pytest.raises(RejoinUnknown):
            pod_ordinal(bad)
    # no check: every SIGTERM is a restart (compose, bare processes)
    assert will_return(Settings(worker_id="w-1", rejoin_check="none")) is True
    # a plain-http API would carry the token in clear: refused, so the member leaves
    plain = Settings(
        worker_id="eventfleet-worker-0", rejoin_check="kubernetes", kube_api_url="http://x"
    )
    assert will_return(plain) is False
