"""The reshard command through a Redis failover or restart (eventfleet/ops/reshard_ride.py,
docs/DESIGN-DECISIONS.md section 35): the steps run again from their start while Redis does
not answer, for up to ``RIDE_S`` without progress, the lease taken again when it was lost
and no other run holds it; against the session's Redis with a worker in this process, and a
redis-server of its own restarted under the command while it waits."""

from __future__ import annotations

from typing import Any

import pytest
import redis
from redis import exceptions as rx

from eventfleet.ledger.shards import ShardCounts
from eventfleet.local.redisserver import LocalRedis
from eventfleet.ops import reshard_ride
from eventfleet.ops.reshard_online import ReshardBusy, Run, grow, lease_key
from eventfleet.store.keys import Keys
from eventfleet.store.namespace import init_namespace, read_counts
from tests.helpers import wait_for
from tests.test_reshard_command import Command
from tests.test_reshard_grow import stocked
from tests.test_split_worker import running_worker


def test_a_run_goes_on_after_redis_did_not_answer_and_after_its_lease_was_lost(
    r: redis.Redis, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = stocked(r, namespace)
    calls: list[int] = []

    def flaky(run: Run, *args: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:
            raise rx.ConnectionError("as in a failover")
        if len(calls) == 2:
            r.delete(lease_key(keys))  # a failover that did not replicate the lease
        return grow(run, *args)

    monkeypatch.setattr(reshard_ride, "grow", flaky)
    lines: list[str] = []
    with running_worker(r, namespace):
        run = Run(r, keys)
        run.take()
        first = run.token
        done = reshard_ride.ride_out(run, 4, 2, 30, lines.append)
        run.release()
    assert len(calls) == 3 and done.old == ShardCounts(2, 2, done.old.window_ms)
    assert read_counts(r, keys).users == 4
    assert lines[0].startswith("ConnectionError: going on where the run stopped"), lines
    assert [line for line in lines if line.startswith("its lease was gone: going on")], lines
    assert run.token != first or not run.token  # taken again, then let go


def test_a_run_gives_up_once_redis_has_not_answered_for_its_ride(
    r: redis.Redis, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = stocked(r, namespace)

    def down(_run: Run, *_args: Any) -> Any:
        raise rx.ConnectionError("down")

    monkeypatch.setattr(reshard_ride, "grow", down)
    run = Run(r, keys)
    run.take()
    with pytest.raises(ReshardBusy, match=r"did not answer for 0.6 s \(ConnectionError\)"):
        reshard_ride.ride_out(run, 4, 2, 30, ride_s=0.6)
    run.release()


def test_the_command_rides_out_a_redis_restart_while_it_waits(
    own_redis: LocalRedis, namespace: str
) -> None:
    """No worker: the command appends its markers and waits; Redis stops under it until the
    command says it goes on, then starts again (its data kept); a worker then starts and the
    same process completes the run (exit 0)."""
    r = redis.Redis.from_url(own_redis.url)
    keys = Keys(namespace)
    init_namespace(r, keys, ShardCounts(2, 2))
    env = {"REDIS_URL": own_redis.url, "EVENTFLEET_NAMESPACE": namespace}
    cmd = Command(env, "reshard", "--user-shards", "4", "--wait", "120")
    try:
        cmd.until("split markers appended: u0 u1 i0 i1")
        r.close()
        own_redis.stop()  # down until the command has noticed
        cmd.until("going on where the run stopped (for up to 30 s without progress)")
        own_redis.start()
        r = redis.Redis.from_url(own_redis.url)
        wait_for(lambda: r.hget(keys.meta, "reshard_state") == b"marked", 30, "data kept")
        with running_worker(r, namespace):
            assert cmd.end() == 0, cmd.seen
        assert read_counts(r, keys).users == 4
    finally:
        if cmd.proc.poll() is None:
            cmd.end(9)
        r.close()
