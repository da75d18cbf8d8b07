"""What ``verify`` checks of an online growth beyond the logs (docs/DESIGN-DECISIONS.md section
35), against the session's Redis under a worker running in this process: the seed digest the
reshard command records as it finds each child's seed, compared with the seed the parent's
fold gives, which keeps a child's seed checked once its log is trimmed and its fold starts
from a later snapshot (and says so when no digest was recorded); a child's forwarded mark
raised past what its parent's log forwards (what a leaked worker credential can do) is a
``mismatch`` naming that cause, and the forwards it suppressed are ``lost``, saying why."""

from __future__ import annotations

from typing import Any

import redis

from eventfleet.ledger.events import Topup
from eventfleet.ledger.shards import ShardCounts, user_shard
from eventfleet.ledger.state import ShardState
from eventfleet.ops.reshard_online import Run, grow
from eventfleet.ops.reshard_progress import SEED_DIGEST, run_key
from eventfleet.producer.client import Producer
from tests.test_reshard_grow import stocked
from tests.test_split_worker import running_worker
from tests.test_verify_split import check, grown, idle, shown


def test_the_command_records_each_seed_digest_and_verify_compares_it(
    r: redis.Redis, namespace: str
) -> None:
    keys = grown(r, namespace, [(4, 4)])
    record: Any = r.hgetall(run_key(keys))
    recorded = {k.decode() for k in record if k.startswith(SEED_DIGEST.encode())}
    assert recorded == {f"{SEED_DIGEST}{s}" for s in ("u2", "u3", "i2", "i3")}
    assert check(r, keys).ok
    r.hset(run_key(keys), f"{SEED_DIGEST}u2", "0" * 40)  # as if u0's owner wrote another seed
    report = check(r, keys)
    assert [(f.kind, f.shard, f.what) for f in shown(report)] == [
        ("mismatch", "u2", "seed (digest recorded when it was written)")
    ], shown(report)


def _trim_to_snapshot(r: redis.Redis, keys: Any, shard: str) -> None:
    snap: Any = r.get(keys.snapshot(shard))
    last = ShardState.from_snapshot(snap, shard).last_id
    assert last != "0-0", "the child wrote no snapshot of its own"
    r.xtrim(keys.events(shard), minid=last)  # its snapshot's own entry stays: it covers the rest


def test_a_childs_trimmed_log_leaves_its_seed_checked_by_its_digest(
    r: redis.Redis, namespace: str
) -> None:
    """u2's log trimmed to its own snapshot: its fold starts there, and its seed is still
    compared (clean, nothing said of its seed); without the recorded digest, verify says
    the seed was not checked; with a wrong one, a mismatch."""
    keys = grown(r, namespace, [(4, 4)])
    _trim_to_snapshot(r, keys, "u2")
    report = check(r, keys)
    assert report.ok, shown(report)
    assert not report.folds["u2"].complete
    assert not [u for u in report.unchecked if "its seed was not compared" in u]
    digest = r.hget(run_key(keys), f"{SEED_DIGEST}u2")
    r.hdel(run_key(keys), f"{SEED_DIGEST}u2")
    report = check(r, keys)
    assert report.ok, shown(report)
    assert [u for u in report.unchecked if u.startswith("u2: folded from a snapshot after its")]
    r.hset(run_key(keys), f"{SEED_DIGEST}u2", "f" * 40)
    assert [f.what for f in shown(check(r, keys))] == ["seed (digest recorded when it was written)"]
    assert digest is not None


def test_a_forged_forwarded_mark_is_found_and_named_as_the_cause(
    r: redis.Redis, namespace: str
) -> None:
    """u2's mark for u0 raised far ahead (a leaked worker credential can HSET it) before the
    growth: u0's owner appends none of its forwards to u2. verify finds the mark, naming the
    leaked credential, and each suppressed forward as lost, pointing at the mark."""
    keys = stocked(r, namespace)
    grown_to = ShardCounts(4, 2)
    moving = [u for u in range(1, 80) if user_shard(u, grown_to) == "u2"][:4]
    stale = Producer(r, keys, ShardCounts(2, 2), counts_every_s=10**9)
    stale.publish([Topup(user_id=u, amount=100) for u in moving])
    with running_worker(r, namespace):
        idle(r, keys)
        r.hset(keys.forwarded("u2"), "u0", "99999999999999-0")  # what the leak may do
        run = Run(r, keys)
        run.take()
        grow(run, 4, 2, wait_s=30)
        run.release()
        stale.publish([Topup(user_id=u, amount=7) for u in moving])  # forwarded by u0
        idle(r, keys)
    assert not any(f.get(b"fwd") for _i, f in r.xrange(keys.events("u2")))  # suppressed
    report = check(r, keys)
    assert report.quiescent and not report.ok
    marks = [f for f in shown(report) if f.what == "forwarded mark of u0"]
    assert [(f.kind, f.shard) for f in marks] == [("mismatch", "u2")], shown(report)
    assert "leaked worker credential" in marks[0].detail
    assert "99999999999999-0" in marks[0].detail
    lost = [f for f in shown(report) if (f.kind, f.what) == ("lost", "forwarded to u2")]
    assert len(lost) == len(moving) and report.count("lost") == len(moving), shown(report)
    assert all("forwarded mark for u0 was raised past them" in f.detail for f in lost)
    r.hset(keys.forwarded("u2"), "u0", report.folds["u0"].forward_last.get("u2", "0-0"))
    assert not [f for f in shown(check(r, keys)) if f.what == "forwarded mark of u0"]
