"""Calm scaling (worker/handover.py): a worker that joins or leaves a fleet under load moves
shards with almost no time without an owner. Measured per moved shard from the workers'
logs (eventfleet/local/moves.py: from the old owner's release to the new owner's
acquisition). Before, a joining worker acquired only at its second pass, a third of a TTL
after its first, while the old owners released at once: with a 5 s TTL each moved shard
waited about 1.5 s. The bound below is half a second: loose for this loaded machine (the
fix gives tens of ms), far under what the old behaviour gives.
"""

from __future__ import annotations

import time
from pathlib import Path

import redis

from eventfleet.chaos.paced import PacedProducer
from eventfleet.ledger.shards import ShardCounts
from eventfleet.local.fleet import LocalFleet, WorkerProc
from eventfleet.local.moves import Move, moves, releases
from eventfleet.local.redisserver import LocalRedis
from eventfleet.ops.status import is_idle
from eventfleet.producer.workload import mixed
from eventfleet.store.keys import Keys
from eventfleet.worker.assignment import assign
from tests.fleet_utils import make_fleet, owners, setup_namespace
from tests.helpers import wait_for
from tests.recompute import check_against_logs

TTL = {"EVENTFLEET_LEASE_TTL_MS": "5000", "EVENTFLEET_SNAPSHOT_INTERVAL_S": "2"}
BOUND_S = 0.5
DOWN_BOUND_S = 1.0
"""A scale-down waited less before (the rest of the drain, a liveness check, a pass: 0.3-1 s):
its bound only guards against a return to a pass-long wait on this loaded machine."""


def settled(r: redis.Redis, ns: str, counts: ShardCounts, ws: list[WorkerProc]) -> bool:
    target = assign(counts.all_shards(), [w.worker_id for w in ws])
    return owners(r, ns, counts) == target


def moved(fleet: LocalFleet, since: float) -> list[Move]:
    """The moves since ``since``, once each new owner has logged its takeover (its lease,
    which ``settled`` sees, is set before its takeover and its log line)."""
    logs = [(w.worker_id, w.log_path) for w in fleet.workers]
    wait_for(lambda: len(moves(logs, since)) >= releases(logs, since), 30, "takeovers logged")
    return moves(logs, since)


def test_scaling_up_and_down_under_load_leaves_no_shard_unowned_for_long(
    r: redis.Redis,
    redis_server: LocalRedis,
    namespace: str,
    tmp_path: Path,
    fleet_factory: list[LocalFleet],
) -> None:
    counts = setup_namespace(r, namespace, 8, 8)
    fleet = make_fleet(redis_server.url, namespace, tmp_path, fleet_factory, **TTL)
    ws = [fleet.start() for _ in range(2)]
    wait_for(lambda: settled(r, namespace, counts, ws), 60, "two workers to settle")
    events = list(mixed(12_000, seed=27))
    producer = PacedProducer(r, Keys(namespace), counts, events, rate=2000, chunk=100)
    producer.start()
    wait_for(lambda: producer.published >= 1000, 30, "events in flight")

    t_up = time.time()
    ws += [fleet.start() for _ in range(2)]
    wait_for(lambda: settled(r, namespace, counts, ws), 60, "four workers to settle")
    up = moved(fleet, t_up)
    assert up, "no shard moved to the new workers"
    assert {m.target for m in up} <= {w.worker_id for w in ws[2:]}
    slow = [m for m in up if m.unowned_s > BOUND_S]
    assert not slow, f"scale-up: shards unowned for long: {slow}"

    t_down = time.time()
    leaving = ws[0]
    held = {s for s, o in owners(r, namespace, counts).items() if o == leaving.worker_id}
    assert fleet.terminate(leaving) == 0
    ws.remove(leaving)
    wait_for(lambda: settled(r, namespace, counts, ws), 60, "three workers to settle")
    down = moved(fleet, t_down)
    assert {m.shard for m in down} == held
    slow = [m for m in down if m.unowned_s > DOWN_BOUND_S]
    assert not slow, f"scale-down: shards unowned for long: {slow}"

    producer.join(90)
    assert producer.error is None
    wait_for(lambda: is_idle(r, Keys(namespace), counts), 90, "the fleet to become idle")
    check_against_logs(r, namespace, events)


def test_the_chaos_report_gives_the_unowned_time_of_the_shards_scaling_moved() -> None:
    from eventfleet.chaos.faults import FaultRecord
    from eventfleet.chaos.report import _unowned

    scale = FaultRecord("scale", 1.0, ["w1"], ["u0"], True, 3)
    scale.unowned_up_s, scale.unowned_down_s = [0.02, 0.05, 0.9], [0.04]
    kill = FaultRecord("kill", 2.0, ["w2"], ["u1"], True, 3)
    got = _unowned([scale, kill])
    assert got["up"] == {"p50": 0.05, "max": 0.9, "samples": 3}
    assert got["down"] == {"p50": 0.04, "max": 0.04, "samples": 1}
    assert got["over_target"] == 1  # a slow hand-over shows
