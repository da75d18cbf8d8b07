"""Online resharding as shipped (docs/DESIGN-DECISIONS.md, sections 30 and 35): worker
processes logged in as the shipped ``eventfleet-worker`` ACL user apply the split markers the
admin appends (``reshard_online.grow``'s steps, run here as ``eventfleet-admin``) while a
producer logged in as ``eventfleet-producer`` publishes, and every event is applied once on the
shard the new counts give it (``eventfleet verify`` exits 0). A forwarded mark forged with the
worker's credential, which makes the parent's later forwards look already written, is a loud
``verify`` finding: the forwards it suppressed are ``lost``."""

from __future__ import annotations

from pathlib import Path

from eventfleet.ledger.events import AddItem, Topup
from eventfleet.ledger.shards import ShardCounts, user_shard
from eventfleet.local.fleet import LocalFleet
from eventfleet.ops.reshard_online import Run, grow
from eventfleet.producer.client import Producer
from eventfleet.store.keys import Keys
from tests.acl_stack import AclStack
from tests.helpers import wait_for
from tests.secure_redis import connect
from tests.test_reshard_grow import ITEMS, Publishing, settled

KEYS = Keys("eventfleet")
WAIT_S = 120.0


def _grow(stack: AclStack, users: int, items: int) -> None:
    """The command's steps as the admin user, in this process."""
    run = Run(stack.client("admin"), KEYS)
    run.take()
    try:
        grow(run, users, items, wait_s=WAIT_S)
    finally:
        run.release()


def test_shipped_workers_apply_a_growth_under_a_producer_and_verify_is_clean(
    port: int, tmp_path: Path, fleet_factory: list[LocalFleet]
) -> None:
    stack = AclStack(port, tmp_path, fleet_factory)
    stack.init("--user-shards", "2", "--item-shards", "2")
    producer = stack.client("producer")
    Producer(producer, KEYS, ShardCounts(2, 2)).publish(
        [AddItem(item_id=i, count=10**6, price=1) for i in ITEMS]
    )
    stack.workers(2)
    root = connect(port, "root", decode_responses=False)
    with Publishing(producer, KEYS, ShardCounts(2, 2), pace_s=0.05) as pub:
        wait_for(lambda: pub.rounds >= 2, 60, "the producer publishing")
        _grow(stack, 4, 4)
        wait_for(lambda: pub.learner.counts.users == 4, 60, "a producer learning the counts")
        at = pub.rounds
        wait_for(lambda: pub.rounds >= at + 2, 60, "rounds published after the growth")
    stack.idle()
    settled(root, KEYS, pub, ShardCounts(4, 4))
    for child in ("u2", "u3", "i2", "i3"):  # each heard the stale router through its parent
        assert any(f.get(b"fwd") for _i, f in root.xrange(KEYS.events(child))), child
    report = stack.verify()
    assert report["ok"], report
    assert stack.run("admin", "verify").returncode == 0


def test_a_forwarded_mark_forged_with_the_worker_credential_is_a_lost_forward_in_verify(
    port: int, tmp_path: Path, fleet_factory: list[LocalFleet]
) -> None:
    """A leaked worker password raises u2's mark for u0 far above anything u0 will log:
    ``forward_once.lua`` then appends none of u0's forwards to u2 (the seed is still
    written, so the growth completes). ``verify`` exits non-zero and names each forward the
    parent's fold gives and u2's log lacks as ``lost``."""
    stack = AclStack(port, tmp_path, fleet_factory)
    stack.init("--user-shards", "2", "--item-shards", "1")
    grown = ShardCounts(4, 1)
    moving = [u for u in range(1, 80) if user_shard(u, grown) == "u2"][:5]
    stale = Producer(stack.client("producer"), KEYS, ShardCounts(2, 1), counts_every_s=10**9)
    stale.publish([Topup(user_id=u, amount=100) for u in moving])
    stack.workers(1)
    stack.idle()  # applied on u0 before the split: they move with the seed
    worker = stack.client("worker")
    worker.hset(KEYS.forwarded("u2"), "u0", "99999999999999-0")  # what the leak may do
    _grow(stack, 4, 1)
    stale.publish([Topup(user_id=u, amount=7) for u in moving])  # stale: forwarded by u0
    stack.idle()
    root = connect(port, "root", decode_responses=False)
    assert not any(f.get(b"fwd") for _i, f in root.xrange(KEYS.events("u2")))  # suppressed
    shown = stack.run("admin", "verify")
    assert shown.returncode != 0, shown
    assert "lost" in shown.stdout and "forwarded to u2" in shown.stdout, shown.stdout
    report = stack.verify()
    assert not report["ok"] and report["quiescent"] and report["lost"] == len(moving), report
    lost = {
        f["detail"].split('"user_id":')[1].split(",")[0]
        for f in report["findings"]
        if (f["kind"], f["shard"], f["what"]) == ("lost", "u0", "forwarded to u2")
    }
    assert lost == {str(u) for u in moving}, report["findings"]
    marks = [f for f in report["findings"] if f["what"] == "forwarded mark of u0"]
    assert [(f["kind"], f["shard"]) for f in marks] == [("mismatch", "u2")], report["findings"]
