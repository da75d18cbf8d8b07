"""A split shard's worker against the session's Redis (docs/DESIGN-DECISIONS.md section 35,
eventfleet/worker/forwards.py): ``apply_entries`` with ``splits`` writes each child's seed and
the entries it forwards before the batch is acked, once however often the batch is written
again or replayed by a takeover; the child, started from its seed, applies what was forwarded
and what came to it directly, each event once; the parent's read model lets go of what moved.
The shipped worker applies a marker in a shard's log (the admin's); one that came through an
inbox is an ``unknown_type`` dead letter, and so is any marker with ``splits`` off."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from eventfleet.ledger.codec import decode_outcome, encode
from eventfleet.ledger.events import AddItem, Order, Topup
from eventfleet.ledger.shards import ShardCounts, user_shard
from eventfleet.ledger.split import marker_text
from eventfleet.ledger.state import ShardState
from eventfleet.producer.client import Producer
from eventfleet.store.keys import BY_FIELD, EVENT_FIELD, GROUP, VIA_FIELD, VIA_INBOX, Keys
from eventfleet.store.namespace import (
    create_shards,
    init_namespace,
    read_counts,
    read_init_counts,
)
from eventfleet.store.settings import Settings
from eventfleet.worker import forwards
from eventfleet.worker.apply import apply_entries
from eventfleet.worker.effects import Effects, queue_acks, queue_effects
from eventfleet.worker.loop import Worker
from eventfleet.worker.model import fields
from eventfleet.worker.observe import Observer
from eventfleet.worker.owned import Owned
from eventfleet.worker.scripts import Scripts
from eventfleet.worker.takeover import take_over
from tests.helpers import wait_for

GROWN = ShardCounts(4, 2)
TOKEN = "w:1"


def topup(user: int, seq: int, amount: int = 1, source: str = "p:a") -> str:
    return encode(Topup(user_id=user, amount=amount), source, seq)


def users_of(shard: str, counts: ShardCounts, n: int = 200) -> list[int]:
    return [u for u in range(1, n) if user_shard(u, counts) == shard]


def owned(shard: str, state: ShardState | None = None) -> Owned:
    return Owned(shard, 1, TOKEN, state or ShardState(shard), time.monotonic() + 60, 0.0, 0.0)


def read(r: redis.Redis, keys: Keys, shard: str) -> list[Any]:
    """What the group delivers next to the worker, as ``fenced_read`` hands it (flat)."""
    reply: Any = r.xreadgroup(GROUP, "w", {keys.events(shard): ">"})
    if not reply:
        return []
    return [(eid, [x for kv in fields.items() for x in kv]) for eid, fields in reply[0][1]]


def write(r: redis.Redis, keys: Keys, shard: str, effects: Effects, upto: str) -> None:
    pipe = r.pipeline(transaction=False)
    queue_effects(pipe, keys, Scripts(r), shard, effects, upto, token=TOKEN)
    pipe.execute()


def setup(r: redis.Redis, namespace: str) -> tuple[Keys, ShardCounts]:
    keys = Keys(namespace)
    init_namespace(r, keys, ShardCounts(2, 2))
    create_shards(r, keys, ["u2", "u3"])
    for shard in ("u0", "u2"):
        r.set(keys.lease(shard), TOKEN)  # the model's writes are fenced by the lease
    return keys, read_counts(r, keys)


def parent_log(r: redis.Redis, keys: Keys) -> tuple[list[int], list[int]]:
    """u0's log: top-ups of p:a for its users, a bundle of more, the marker, then top-ups a
    stale router still sends u0 (seq 1..), some for the users u2 now owns."""
    init = ShardCounts(2, 2)
    mine = users_of("u0", init)
    stay = [u for u in mine if user_shard(u, GROWN) == "u0"][:5]
    move = [u for u in mine if user_shard(u, GROWN) == "u2"][:5]
    stream = keys.events("u0")
    seq = 0
    for u in stay + move:
        seq += 1
        r.xadd(stream, {EVENT_FIELD: topup(u, seq, 10)})
    bundle = [topup(u, seq + i + 1, 5) for i, u in enumerate(move[:2] + stay[:1])]
    seq += len(bundle)
    r.xadd(stream, {EVENT_FIELD: f"[{','.join(bundle)}]"})
    r.xadd(stream, {EVENT_FIELD: marker_text(4, 2)})
    for u in move + stay:
        seq += 1
        r.xadd(stream, {EVENT_FIELD: topup(u, seq, 100)})
    bundle = [topup(u, seq + i + 1, 1000) for i, u in enumerate(move[2:4] + stay[1:2])]
    r.xadd(stream, {EVENT_FIELD: f"[{','.join(bundle)}]"})
    return stay, move


def expected(stay: list[int], move: list[int]) -> dict[int, int]:
    out = {u: 10 + 100 for u in stay + move}
    for u in move[:2] + stay[:1]:
        out[u] += 5
    for u in move[2:4] + stay[1:2]:
        out[u] += 1000
    return out


def applied_split(r: redis.Redis, namespace: str) -> tuple[Any, ...]:
    """``parent_log`` read and applied by u0's owner, its effects written, not acked: keys,
    counts, the users staying and moving, the entries, the owned shard, effects and acks."""
    keys, counts = setup(r, namespace)
    stay, move = parent_log(r, keys)
    entries = read(r, keys, "u0")
    parent = owned("u0")
    effects, acks, _n = apply_entries(parent, entries, counts, Observer(60), splits=True)
    write(r, keys, "u0", effects, parent.state.last_id)
    return keys, counts, stay, move, entries, parent, effects, acks


def test_a_split_shard_writes_seeds_and_forwards_once_and_the_child_applies_them(
    r: redis.Redis, namespace: str
) -> None:
    keys, counts, stay, move, entries, parent, effects, acks = applied_split(r, namespace)
    want = expected(stay, move)
    assert not effects.dead
    assert parent.state.balances == {u: want[u] for u in stay}
    seed = r.get(keys.snapshot("u2"))
    assert seed is not None and not r.exists(keys.snapshot("u0"))
    child = ShardState.from_snapshot(seed, "u2")
    forwarded = r.xrange(keys.events("u2"))
    assert forwarded and all(f[b"fwd"] == b"u0" and b"by" not in f for _i, f in forwarded)
    assert r.hget(keys.forwarded("u2"), "u0") == entries[-1][0]
    model = r.hgetall(keys.model("u0"))
    assert not any(f"b:{u}".encode() in model for u in move)
    assert all(model[f"b:{u}".encode()] == str(want[u]).encode() for u in stay)
    assert model[b"_routing"] == b"4,2"
    # the child's model holds its seed from the moment the seed exists: no gap for moved keys
    kid_model = {k.decode(): v.decode() for k, v in r.hgetall(keys.model("u2")).items()}
    assert kid_model == {**fields(child), "_upto": "0-0"}
    assert kid_model["f:u0:p:a"] == kid_model["w:p:a"] and kid_model["_routing"] == "4,2"
    assert {f"b:{u}" for u in move} <= kid_model.keys()

    # The same batch written again (its reply lost), and applied again from the start (a
    # takeover from no snapshot): the same seed, nothing forwarded twice.
    # The child's owner wrote a newer value meanwhile: no replay of the parent overwrites it.
    r.hset(keys.model("u2"), mapping={f"b:{move[0]}": "999999", "_upto": "9-0"})
    write(r, keys, "u0", effects, parent.state.last_id)
    again, _acks, _n = apply_entries(owned("u0"), entries, counts, Observer(60), splits=True)
    write(r, keys, "u0", again, parent.state.last_id)
    assert r.xrange(keys.events("u2")) == forwarded and r.get(keys.snapshot("u2")) == seed
    assert r.hmget(keys.model("u2"), [f"b:{move[0]}", "_upto"]) == [b"999999", b"9-0"]
    pipe = r.pipeline(transaction=False)
    queue_acks(pipe, keys, "u0", acks)
    pipe.execute()

    # The child from its seed: what was forwarded, and a producer that learnt the counts
    # sending u2 directly from above every seq it sent u0 (Stamper.regrow), one of them
    # twice; each applied once.
    top = len(stay + move) * 2 + 6
    r.xadd(keys.events("u2"), {EVENT_FIELD: topup(move[0], top + 1, 7)})
    r.xadd(keys.events("u2"), {EVENT_FIELD: topup(move[0], top + 1, 7)})
    kid = owned("u2", child)
    fx, _acks, _n = apply_entries(kid, read(r, keys, "u2"), counts, Observer(60), splits=True)
    assert not fx.dead and not fx.moved
    assert kid.state.balances == {u: want[u] + (7 if u == move[0] else 0) for u in move}


def test_a_large_seeds_model_comes_in_slices_before_the_seed(
    r: redis.Redis, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With slices of 3 fields the child's model is still whole, with the seed."""
    monkeypatch.setattr(forwards, "FULL_CHUNK", 3)
    keys, _counts, _stay, move, _entries, _parent, effects, _acks = applied_split(r, namespace)
    assert effects.moved is not None and len(effects.moved.models["u2"]) > 4 * 3
    seed = r.get(keys.snapshot("u2"))
    assert seed is not None
    kid_model = {k.decode(): v.decode() for k, v in r.hgetall(keys.model("u2")).items()}
    assert kid_model == {**fields(ShardState.from_snapshot(seed, "u2")), "_upto": "0-0"}
    assert {f"b:{u}" for u in move} <= kid_model.keys()


def test_without_splits_a_marker_is_dead_lettered_as_before(r: redis.Redis, namespace: str) -> None:
    keys, counts = setup(r, namespace)
    r.xadd(keys.events("u0"), {EVENT_FIELD: marker_text(4, 2)})
    effects, _acks, _n = apply_entries(owned("u0"), read(r, keys, "u0"), counts, Observer(60))
    assert [d.reason for d in effects.dead] == ["unknown_type"] and not effects.moved


def test_a_marker_moved_out_of_an_inbox_is_dead_lettered_even_with_splits(
    r: redis.Redis, namespace: str
) -> None:
    """Only the admin appends a marker to a log: one a producer pushed to an inbox (shared or
    its own) is moved into the log ``via inbox`` and refused, splitting nothing."""
    keys, counts = setup(r, namespace)
    for by in (b"", b"app"):
        fields = {EVENT_FIELD: marker_text(4, 2), VIA_FIELD: VIA_INBOX}
        r.xadd(keys.events("u0"), {**fields, BY_FIELD: by} if by else fields)
    parent = owned("u0")
    effects, _acks, _n = apply_entries(parent, read(r, keys, "u0"), counts, Observer(60), True)
    assert [d.reason for d in effects.dead] == ["unknown_type"] * 2 and not effects.moved
    assert parent.state.routing is None and not parent.state.splits


def test_the_shipped_worker_applies_a_logged_marker_and_refuses_one_from_an_inbox(
    r: redis.Redis, namespace: str
) -> None:
    """A worker as ``eventfleet worker`` builds it (no switch turned on by the test): a
    marker pushed to u1's inbox, as a producer could, becomes a dead letter of reason
    ``unknown_type`` and seeds nothing; the admin's marker appended to u0's log splits u0
    (u2's seed written, then u2 taken over)."""
    keys = Keys(namespace)
    init_namespace(r, keys, ShardCounts(2, 2))
    create_shards(r, keys, ["u2", "u3"])
    r.hset(keys.meta, mapping={"init_user_shards": 2, "init_item_shards": 2})
    r.hset(keys.meta, "reshard_target", "4,2")
    r.rpushx(keys.inbox("u1"), marker_text(4, 2))
    r.xadd(keys.events("u0"), {EVENT_FIELD: marker_text(4, 2)})
    with running_worker(r, namespace, splits=None) as worker:
        assert worker.ownership.growth.splits and worker.standbys.splits
        wait_for(lambda: r.xlen(keys.dlq("u1")), 20, "u1's dead letter")
        ((_id, letter),) = r.xrange(keys.dlq("u1"))
        assert letter[b"reason"] == b"unknown_type", letter
        wait_for(lambda: "u2" in {o.name for o in worker.ownership.held()}, 20, "u2 taken")
        assert not r.exists(keys.snapshot("u3")) and not r.xlen(keys.dlq("u0"))
        held = {o.name: o for o in worker.ownership.held()}
        assert held["u0"].state.routing == (4, 2) and held["u1"].state.routing is None


def test_a_takeover_replays_a_split_writing_nothing_twice(r: redis.Redis, namespace: str) -> None:
    """The owner applied the log and wrote its effects, then died before the ack: the
    takeover replays every entry, the marker included, and writes the same seed and no
    forward again; the parent's model holds no moved user."""
    keys, counts, stay, move, entries, parent, _fx, _acks = applied_split(r, namespace)
    want = expected(stay, move)
    seed, forwarded = r.get(keys.snapshot("u2")), r.xrange(keys.events("u2"))
    r.hset(keys.model("u0"), f"b:{move[0]}", "1")  # as a model written before the split
    state, stats = take_over(r, keys, Scripts(r), "u0", "w2", counts, 5, token=TOKEN, splits=True)
    assert stats.replayed == len(entries) and stats.claimed == len(entries)
    assert state.balances == parent.state.balances == {u: want[u] for u in stay}
    assert r.get(keys.snapshot("u2")) == seed and r.xrange(keys.events("u2")) == forwarded
    assert not r.hexists(keys.model("u0"), f"b:{move[0]}")
    assert r.xpending(keys.events("u0"), GROUP)["pending"] == 0


def test_a_takeover_that_runs_first_writes_the_seed_and_forwards(
    r: redis.Redis, namespace: str
) -> None:
    """The owner died before writing anything: the takeover's replay writes the seed and the
    forwards, the same bytes the worker writes."""
    keys, counts = setup(r, namespace)
    stay, move = parent_log(r, keys)
    entries = read(r, keys, "u0")
    take_over(r, keys, Scripts(r), "u0", "w2", counts, 5, token=TOKEN, splits=True)
    seed, forwarded = r.get(keys.snapshot("u2")), r.xrange(keys.events("u2"))
    assert seed is not None and forwarded
    effects, _acks, _n = apply_entries(owned("u0"), entries, counts, Observer(60), splits=True)
    write(r, keys, "u0", effects, entries[-1][0].decode())
    assert r.get(keys.snapshot("u2")) == seed and r.xrange(keys.events("u2")) == forwarded
    child = ShardState.from_snapshot(seed, "u2")
    kid = owned("u2", child)
    apply_entries(kid, read(r, keys, "u2"), counts, Observer(60), splits=True)
    assert kid.state.balances == {u: expected(stay, move)[u] for u in move}


# --- a worker running, producers publishing --------------------------------------------


def outcomes(r: redis.Redis, keys: Keys, shards: list[str]) -> list[Any]:
    return [decode_outcome(f[b"outcome"]) for s in shards for _eid, f in r.xrange(keys.outcomes(s))]


def balances(r: redis.Redis, keys: Keys, counts: ShardCounts) -> dict[int, int]:
    """Every balance in the user shards' read models, each asserted once and on its shard
    under ``counts``."""
    out: dict[int, int] = {}
    for s in (f"u{n}" for n in range(counts.users)):
        for name, value in r.hgetall(keys.model(s)).items():
            if name.startswith(b"b:"):
                user = int(name[2:])
                assert user_shard(user, counts) == s and user not in out, (user, s)
                out[user] = int(value)
    return out


class Killed(Exception):
    """Raised in a running worker's loop to kill it (``running_worker``)."""


@contextlib.contextmanager
def running_worker(
    r: redis.Redis,
    namespace: str,
    name: str = "w",
    splits: bool | None = True,
    lease_ttl_ms: int = 900,
) -> Iterator[Worker]:
    """A worker running on a thread of this process with a client of its own, stopped
    (drained) on the way out; it folds with the counts at init, as the worker's main reads
    them. ``splits``: set on the worker (None: left as the shipped worker has it)."""
    pool = r.connection_pool
    own = redis.Redis(
        connection_pool=redis.ConnectionPool(
            connection_class=pool.connection_class, **pool.connection_kwargs
        )
    )
    counts = read_init_counts(own, Keys(namespace))
    settings = Settings(namespace=namespace, worker_id=name, lease_ttl_ms=lease_ttl_ms)
    worker = Worker(settings, own, counts)
    if splits is not None:
        worker.ownership.growth.splits = worker.standbys.splits = splits

    def run() -> None:
        with contextlib.suppress(Killed):  # the test's kill: no drain, leases left to lapse
            worker.run()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield worker
    finally:
        worker.ownership.stop()
        thread.join(30)
        own.close()
        own.connection_pool.disconnect()
    assert not thread.is_alive()


def test_a_running_worker_splits_its_shards_and_applies_every_event_once(
    r: redis.Redis, namespace: str
) -> None:
    """The counts grow 2+2 -> 4+2 as the command is to do it (new shards made, counts
    published, then a marker in every old shard's log) under a worker with splits on and two
    producers: one that never re-reads the counts (everything it sends goes stale to the
    parents) and one that learns them. The new shards are taken only once seeded; every
    top-up and order is applied once, on the shard the new counts give its user."""
    keys = Keys(namespace)
    init = ShardCounts(2, 2)
    init_namespace(r, keys, init)
    stale = Producer(r, keys, init, counts_every_s=10**9)
    learner = Producer(r, keys, init, counts_every_s=0)
    users = range(1, 41)
    stale.publish([AddItem(item_id=f"sku{i}", count=1000, price=1) for i in range(4)])
    for p in (stale, learner):
        p.publish([Topup(user_id=u, amount=100) for u in users])
    create_shards(r, keys, ["u2", "u3"])
    r.hset(keys.meta, mapping={"init_user_shards": 2, "init_item_shards": 2})
    r.hset(keys.meta, "user_shards", 4)
    with running_worker(r, namespace) as worker:
        assert (worker.counts.users, worker.counts.items) == (2, 2)
        old = {"u0", "u1", "i0", "i1"}
        wait_for(lambda: {o.name for o in worker.ownership.held()} == old, 20, "the old shards")
        # u2 and u3 were targeted in the same pass, but have no seed yet
        assert not r.exists(keys.lease("u2")) and not r.exists(keys.snapshot("u2"))
        orders = [Order(order_id=f"o{u}", user_id=u, item_id=f"sku{u % 4}", qty=1) for u in users]
        stale.publish(orders[:20])
        for shard in ("u0", "u1", "i0", "i1"):
            r.xadd(keys.events(shard), {EVENT_FIELD: marker_text(4, 2)})
        for p in (stale, learner):
            p.publish([Topup(user_id=u, amount=10) for u in users])
        learner.publish(orders[20:])
        assert learner.counts.users == 4
        every = ["u0", "u1", "u2", "u3"]
        wait_for(lambda: len(outcomes(r, keys, every)) >= len(orders), 30, "every outcome")
        grown = ShardCounts(4, 2)
        got = outcomes(r, keys, every)
        assert sorted(o.order_id for o in got) == sorted(o.order_id for o in orders)
        paid = {o.user_id: o.amount for o in got if o.status == "confirmed"}
        assert len(paid) == len(orders)  # every user had the money
        want = {u: 220 - paid[u] for u in users}
        wait_for(lambda: balances(r, keys, grown) == want, 30, "every balance on its shard")
        assert {o.name for o in worker.ownership.held()} == {"u0", "u1", "u2", "u3", "i0", "i1"}
        assert not any(r.xlen(keys.dlq(s)) for s in [*every, "i0", "i1"])
        for child in ("u2", "u3"):  # each heard stale routers through its parent
            assert any(f.get(b"fwd") for _i, f in r.xrange(keys.events(child))), child


def test_a_forward_keeps_the_producer_scope_of_its_own_inbox(
    r: redis.Redis, namespace: str
) -> None:
    """An entry moved from producer app's own inbox (``by``) and forwarded keeps its scope:
    the child counts its source and seqs as app's, apart from another producer's."""
    keys, counts = setup(r, namespace)
    move = [u for u in users_of("u0", ShardCounts(2, 2)) if user_shard(u, GROWN) == "u2"]
    stream = keys.events("u0")
    moved = {EVENT_FIELD: topup(move[0], 1, 3), VIA_FIELD: VIA_INBOX, BY_FIELD: b"app"}
    r.xadd(stream, moved)
    r.xadd(stream, {EVENT_FIELD: marker_text(4, 2)})
    for seq in (2, 2, 3):  # a retry among them
        r.xadd(stream, {**moved, EVENT_FIELD: topup(move[0], seq, 3).encode()})
    r.xadd(stream, {EVENT_FIELD: topup(move[0], 2, 1000)})  # the same source, not app's
    parent = owned("u0")
    effects, _acks, _n = apply_entries(parent, read(r, keys, "u0"), counts, Observer(60), True)
    write(r, keys, "u0", effects, parent.state.last_id)
    fields = [f for _i, f in r.xrange(keys.events("u2"))]
    assert [(f[b"fwd"], f.get(b"by")) for f in fields] == [(b"u0", b"app")] * 2 + [(b"u0", None)]
    seed = r.get(keys.snapshot("u2"))
    assert seed is not None
    kid = owned("u2", ShardState.from_snapshot(seed, "u2"))
    fx, _acks, _n = apply_entries(kid, read(r, keys, "u2"), counts, Observer(60), True)
    assert not fx.dead
    assert kid.state.balances == {move[0]: 3 + 3 + 3 + 1000}
    assert kid.state.watermarks["app/p:a"] == 3 and kid.state.watermarks["p:a"] == 2


def test_a_grandchild_lets_go_of_a_forgotten_sources_other_paths_in_its_model() -> None:
    """u6, born of u2 born of u0, holds two forwarded marks of p:a (paths ``u2`` and
    ``u0.u2``). A forwarded entry of p:a once the window forgot it keeps only its own path:
    the model's field of the other goes with the batch, so the model stays the fold's."""
    init = ShardCounts(2, 2)
    user = next(u for u in range(1, 500) if user_shard(u, ShardCounts(8, 2)) == "u6")
    state = ShardState(
        "u6", routing=(8, 2), splits=[8], fwd={"p:a": {"u2": 5, "u0.u2": 3}},
        watermarks={"p:a": 5}, seen={"p:a": 1000}, prune_at=10**15,
    )  # fmt: skip
    kid = owned("u6", state)
    later = f"{1000 + init.window_ms + 10}-0"
    entries = [(later.encode(), [b"event", topup(user, 1, 9).encode(), b"fwd", b"u2"])]
    effects, _acks, _n = apply_entries(kid, entries, init, Observer(60), splits=True)
    assert not effects.dead and kid.state.balances == {user: 9}
    assert kid.state.fwd == {"p:a": {"u2": 1}}
    assert effects.model_removed == ["f:u0:p:a"]
    written = dict(zip(effects.model.pairs[0::2], effects.model.pairs[1::2], strict=True))
    assert written["f:u2:p:a"] == "1" and written["_routing"] == "8,2"


def test_a_split_batch_queues_the_childs_seed_and_model_before_the_parent_lets_go(
    r: redis.Redis, namespace: str
) -> None:
    """The marker's batch: the written mark, then each child's ``forward_once`` (its seed
    and model), then the parent's model write that removes the moved fields: a reader
    between two of them finds a moved key's field in one of the two models."""
    keys, counts = setup(r, namespace)
    parent_log(r, keys)
    parent = owned("u0")
    effects, _acks, _n = apply_entries(parent, read(r, keys, "u0"), counts, Observer(60), True)
    pipe = r.pipeline(transaction=False)
    queue_effects(pipe, keys, Scripts(r), "u0", effects, parent.state.last_id, token=TOKEN)
    touched = [[str(a) for a in args[3 : 3 + int(args[2])]] for args, _opts in pipe.command_stack]
    assert touched == [
        [keys.written("u0")],
        [keys.events("u2"), keys.forwarded("u2"), keys.snapshot("u2"), keys.model("u2")],
        [keys.written("u0"), keys.lease("u0"), keys.model("u0")],
    ]


def test_a_worker_takes_a_seeded_child_before_its_next_ownership_pass(
    r: redis.Redis, namespace: str
) -> None:
    """The children of a recorded target are looked for between ownership passes
    (``Growth.seed_appeared``): with the next pass put off for good once the old shards are
    held, the worker still takes u2 and u3 as soon as the markers seed them (that pass
    then schedules the next as usual)."""
    keys = Keys(namespace)
    init_namespace(r, keys, ShardCounts(2, 2))
    create_shards(r, keys, ["u2", "u3"])
    r.hset(keys.meta, mapping={"init_user_shards": 2, "init_item_shards": 2})
    r.hset(keys.meta, "reshard_target", "4,2")
    with running_worker(r, namespace, lease_ttl_ms=5000) as worker:
        own = worker.ownership
        wait_for(lambda: len(own.held()) == 4 and own.growth.waiting, 30, "the old shards")
        assert own.growth.waiting == ["u2", "u3"] and not own.growth.seed_appeared()
        own._next_pass = time.monotonic() + 10**6  # no pass but one the seeds bring on
        for shard in ("u0", "u1"):
            r.xadd(keys.events(shard), {EVENT_FIELD: marker_text(4, 2)})
        wait_for(lambda: len(own.held()) == 6, 30, "u2 and u3 taken")
        assert not own.growth.waiting and own.next_pass < time.monotonic() + 10
