"""A flooded inbox never makes one script long: the emitted-events script moves at most
INBOX_MOVE_LIMIT inbox elements before appending a batch's events."""

from __future__ import annotations

from typing import Any

import redis

from eventfleet.ledger.bundle import MAX_EVENTS, split
from eventfleet.ledger.codec import encode
from eventfleet.ledger.events import Topup
from eventfleet.ledger.rules import Emit, StepResult
from eventfleet.ledger.shards import user_shard
from eventfleet.ledger.state import ShardState
from eventfleet.store.fold import fold_entry
from eventfleet.store.keys import GROUP, Keys
from eventfleet.worker.effects import Effects, queue_effects
from eventfleet.worker.scripts import INBOX_MOVE_LIMIT, Scripts
from tests.fleet_utils import setup_namespace


def test_emitted_events_move_a_bounded_part_of_a_flooded_inbox(
    r: redis.Redis, namespace: str
) -> None:
    setup_namespace(r, namespace)
    keys = Keys(namespace)
    flood = [encode(Topup(user_id=1, amount=1), "p:flood", s) for s in range(1, 2501)]
    for i in range(0, len(flood), 500):
        r.rpushx(keys.inbox("u0"), *flood[i : i + 500])  # type: ignore[arg-type]
    charge = '{"type":"release","order_id":"o","item_id":"x","qty":1,"source":"i0","seq":1}'
    res = StepResult("applied", "order", emits=[Emit("u0", 1, charge)])

    def write() -> None:
        pipe = r.pipeline(transaction=False)
        queue_effects(pipe, keys, Scripts.register(r), "i0", Effects.of([res]), "1-0")
        pipe.execute()

    write()
    log: Any = r.xrange(keys.events("u0"))
    assert log[-1][1][b"event"] == charge.encode()  # after a bounded part of the inbox
    assert int(r.llen(keys.inbox("u0"))) - 1 == len(flood) - INBOX_MOVE_LIMIT
    moved = [t.decode() for _, f in log[:-1] for t in split(f[b"event"])]
    assert moved == flood[:INBOX_MOVE_LIMIT]  # in order, bundled as the owner's move bundles
    assert all(f[b"via"] == b"inbox" for _, f in log[:-1])
    assert len(log) - 1 == INBOX_MOVE_LIMIT // MAX_EVENTS


def test_the_move_bundles_flat_objects_and_keeps_every_other_element_alone(
    r: redis.Redis, namespace: str
) -> None:
    """What a producer pushes cannot change where its neighbours start or end: an element that
    is not one flat object is moved as an entry of its own; the bundles cut back exactly."""
    counts = setup_namespace(r, namespace)
    keys = Keys(namespace)
    uid = next(u for u in range(1, 100) if user_shard(u, counts) == "u0")
    good = [encode(Topup(user_id=uid, amount=1), "p:ok", s) for s in range(1, 6)]
    hostile = ['{"x":"', "[" * 50, '{"a":{"b":1}}', "", " " + good[0] + " ", "x" * 70_000]
    pushed = [good[0], hostile[0], good[1], hostile[1], good[2], hostile[2], hostile[3]]
    pushed += [good[3], hostile[4], hostile[5], good[4]]
    r.rpushx(keys.inbox("u0"), *pushed)  # type: ignore[arg-type]
    scripts = Scripts.register(r)
    r.set(keys.lease("u0"), "w:1")
    r.xgroup_createconsumer(keys.events("u0"), GROUP, "w")
    got: Any = scripts.fenced_read(
        r,
        lease=keys.lease("u0"),
        events=keys.events("u0"),
        inbox=keys.inbox("u0"),
        token="w:1",
        consumer="w",
        count=100,
        start=">",
        applied_to="0-0",
        move_limit=100,
    )
    texts = [t.decode() for _, flat in got for t in split(flat[1])]
    assert texts == [p.strip() for p in pushed]  # every element once, in order, none merged
    state = ShardState("u0")
    for eid, flat in got:
        fold_entry(state, eid.decode(), flat[1], True, counts, False)
    assert state.balances == {uid: 5}  # the five good top-ups, whatever sits between them
