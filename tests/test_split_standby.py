"""Warm standbys across an online growth (worker/standby.py, docs/DESIGN-DECISIONS.md section
35): the shards stood by for follow the namespace's shard list as each ownership pass reads
it, and a shard born of a split is stood by only once its seed exists (a copy started empty
would be taken over instead of the seed)."""

from __future__ import annotations

import time

import redis

from eventfleet.ledger.shards import ShardCounts
from eventfleet.ledger.split import marker_text
from eventfleet.ledger.state import ShardState
from eventfleet.store.keys import EVENT_FIELD, Keys
from eventfleet.store.namespace import create_shards, init_namespace
from eventfleet.store.settings import Settings
from eventfleet.worker.conn import Conn
from eventfleet.worker.loop import Worker
from eventfleet.worker.standby import Standbys, standby_shards
from tests.helpers import wait_for
from tests.test_split_worker import running_worker


def test_a_standby_follows_the_growth_and_stands_by_for_a_child_only_from_its_seed(
    r: redis.Redis, namespace: str
) -> None:
    """``retarget`` takes the pass's shard list (a growth adds shards); a child whose parent
    has not split yet has no seed and gets no warm copy (one started empty would be taken
    over instead of the seed); once its seed exists, the next pass's copy starts from it."""
    keys = Keys(namespace)
    init = ShardCounts(2, 2)
    init_namespace(r, keys, init)
    create_shards(r, keys, ["u2", "u3"])
    grown = ShardCounts(4, 2).all_shards()
    me = next(
        m for m in (f"b{n}" for n in range(50)) if "u2" in standby_shards(grown, ["a", m], m, 1)
    )
    members = ["a", me]
    settings = Settings(namespace=namespace, worker_id=me, standbys=1)
    sb = Standbys(settings, Conn(settings, r), init)
    wanted = standby_shards(grown, members, me, 1)
    sb.retarget(members, [])  # the list at start: no child
    wait_for(lambda: sb.tail() >= 0 and set(sb.shards) == wanted - {"u2", "u3"}, 10, "old")
    sb.retarget(members, [], grown)

    def settled() -> bool:
        sb.tail()
        return set(sb.shards) == wanted - {"u2", "u3"} and not sb.tail()

    wait_for(settled, 10, "the old shards warm, no child")
    seed = ShardState("u2", routing=(4, 2), splits=[2, 4])
    seed.balances = {3: 50}
    r.set(keys.snapshot("u2"), seed.to_snapshot())
    sb.tail()
    assert "u2" not in sb.shards  # looked at again after the next pass, not every tail
    sb.retarget(members, [], grown)
    wait_for(lambda: sb.tail() >= 0 and "u2" in sb.shards, 10, "u2 warm from its seed")
    warm = sb.take("u2")
    assert warm is not None and warm.balances == {3: 50} and warm.routing == (4, 2)


def test_running_workers_stand_by_for_children_once_seeded(r: redis.Redis, namespace: str) -> None:
    """Two workers (one standby each, as shipped): a reshard recorded and its shards made, no
    marker yet, no child owned or stood by; after the markers every child is owned by one and
    stood by by the other."""
    keys = Keys(namespace)
    init_namespace(r, keys, ShardCounts(2, 2))
    create_shards(r, keys, ["u2", "u3"])
    r.hset(keys.meta, mapping={"init_user_shards": 2, "init_item_shards": 2})
    r.hset(keys.meta, "reshard_target", "4,2")
    kids = {"u2", "u3"}
    with running_worker(r, namespace, "a") as a, running_worker(r, namespace, "b") as b:
        pair = (a, b)

        def held(w: Worker) -> set[str]:
            return {o.name for o in w.ownership.held()}

        def warm_and_owned() -> set[str]:
            return {s for w in pair for s in held(w)} | {s for w in pair for s in w.standbys.shards}

        old = {"u0", "u1", "i0", "i1"}
        wait_for(lambda: held(a) | held(b) == old and old <= warm_and_owned(), 30, "old shards")
        passes = [w.ownership.next_pass for w in pair]
        wait_for(
            lambda: all(w.ownership.next_pass > p for w, p in zip(pair, passes, strict=True)),
            10,
            "a pass",
        )
        assert not kids & warm_and_owned()
        for shard in ("u0", "u1"):
            r.xadd(keys.events(shard), {EVENT_FIELD: marker_text(4, 2)})

        def covered() -> bool:
            return all(
                (s in held(a) and s in b.standbys.shards)
                or (s in held(b) and s in a.standbys.shards)
                for s in kids
            )

        wait_for(covered, 30, "every child owned by one worker and stood by by the other")


def test_a_worker_lists_a_new_target_before_its_next_ownership_pass(
    r: redis.Redis, namespace: str
) -> None:
    """A reshard that records its target just after a worker's pass (``Growth.target_changed``,
    polled every ``TARGET_POLL_S``): with the next pass put off for good, the worker still
    lists the target's shards, waits for their seeds, and takes them once the markers seed
    them."""
    keys = Keys(namespace)
    init_namespace(r, keys, ShardCounts(2, 2))
    with running_worker(r, namespace, lease_ttl_ms=5000) as worker:
        own = worker.ownership
        wait_for(lambda: len(own.held()) == 4, 30, "the old shards")
        own._next_pass = time.monotonic() + 10**6  # no pass but one the target brings on
        create_shards(r, keys, ["u2", "u3"])
        r.hset(keys.meta, mapping={"init_user_shards": 2, "init_item_shards": 2})
        r.hset(keys.meta, "reshard_target", "4,2")
        wait_for(lambda: own.growth.waiting == ["u2", "u3"], 30, "the target's children listed")
        for shard in ("u0", "u1"):
            r.xadd(keys.events(shard), {EVENT_FIELD: marker_text(4, 2)})
        wait_for(lambda: len(own.held()) == 6, 30, "u2 and u3 taken")
