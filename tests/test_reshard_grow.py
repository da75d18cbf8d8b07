"""The online reshard's steps end to end (eventfleet/ops/reshard_online.py: ``grow``,
docs/DESIGN-DECISIONS.md section 35) against the session's Redis, under a worker with splits
on running in this process (tests/test_split_worker.py: ``running_worker``) while producers
publish: every event applied once, on the shard the new counts give it; a run killed midway
and re-run appends no marker twice. The command that runs these steps:
tests/test_reshard_command.py."""

from __future__ import annotations

import threading
from typing import Any

import pytest
import redis

from eventfleet.ledger.bundle import split
from eventfleet.ledger.events import AddItem, Order, Topup
from eventfleet.ledger.shards import ShardCounts, item_shard
from eventfleet.ledger.split import marker_text
from eventfleet.ops.reshard_online import DONE, Run, grow, lease_key
from eventfleet.producer.client import Producer
from eventfleet.store.keys import EVENT_FIELD, Keys
from eventfleet.store.namespace import init_namespace, read_counts
from eventfleet.worker import singleio
from tests.helpers import cli, cli_json, wait_for
from tests.test_split_worker import Killed, balances, outcomes, running_worker

USERS = range(1, 61)
ITEMS = [f"sku{i}" for i in range(8)]


class Publishing:
    """Two producers publishing rounds of top-ups and orders on a thread until stopped: one
    never re-reads the counts, one learns them."""

    def __init__(
        self, r: redis.Redis, keys: Keys, counts: ShardCounts, pace_s: float = 0.0
    ) -> None:
        self.pace_s = pace_s
        """Between rounds (a fleet that stops for a while gets no unbounded backlog)."""
        self.stale = Producer(r, keys, counts, counts_every_s=10**9)
        self.learner = Producer(r, keys, counts, counts_every_s=0)
        self.rounds = 0
        self.orders: list[str] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.is_set():
            n = self.rounds
            for p in (self.stale, self.learner):
                p.publish([Topup(user_id=u, amount=5) for u in USERS], chunk=20)
            orders = [
                Order(order_id=f"o{n}-{u}", user_id=u, item_id=ITEMS[(u + n) % 8], qty=1)
                for u in USERS[n % 6 :: 6]
            ]
            (self.stale if n % 2 else self.learner).publish(orders)
            self.orders += [o.order_id for o in orders]
            self.rounds += 1
            if self.pace_s:
                self.stop.wait(self.pace_s)

    def __enter__(self) -> Publishing:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.halt()

    def halt(self) -> None:
        self.stop.set()
        self.thread.join(30)


def settled(
    r: redis.Redis, keys: Keys, pub: Publishing, grown: ShardCounts, dead_markers: bool = False
) -> None:
    """Every order decided once, every balance and stock once on its shard under ``grown``
    and what the top-ups and decisions make it; no dead letter (``dead_markers``: but split
    markers a worker that does not apply them dead-lettered)."""
    users = [f"u{n}" for n in range(grown.users)]
    wait_for(lambda: len(outcomes(r, keys, users)) >= len(pub.orders), 30, "every outcome")
    got = outcomes(r, keys, users)
    assert sorted(o.order_id for o in got) == sorted(pub.orders)  # each decided once
    spent: dict[int, int] = {}
    sold: dict[str, int] = {}
    for o in got:
        if o.status == "confirmed":
            spent[o.user_id] = spent.get(o.user_id, 0) + o.amount
            sold[o.item_id] = sold.get(o.item_id, 0) + o.qty
    want = {u: 2 * 5 * pub.rounds - spent.get(u, 0) for u in USERS}
    wait_for(lambda: balances(r, keys, grown) == want, 30, "every balance on its shard")

    def stock() -> dict[str, int]:
        out = {}
        for item in ITEMS:
            model: Any = r.hget(keys.model(item_shard(item, grown)), f"i:{item}")
            out[item] = -1 if model is None else int(model.split()[0])
        return out

    want_stock = {i: 10**6 - sold.get(i, 0) for i in ITEMS}  # releases given back
    wait_for(lambda: stock() == want_stock, 30, "every item's stock on its shard")
    for s in grown.all_shards():
        dead = [f for _i, f in r.xrange(keys.dlq(s))]
        assert not dead or (dead_markers and all(b'"split"' in f[b"raw"] for f in dead)), dead
        forwarded = [
            (f.get(b"by"), t)
            for _i, f in r.xrange(keys.events(s))
            if f.get(b"fwd")
            for t in split(f[EVENT_FIELD])
        ]
        assert len(forwarded) == len(set(forwarded)), f"{s}: an event forwarded twice"


def stocked(r: redis.Redis, namespace: str) -> Keys:
    """A namespace of 2 + 2 shards with ``ITEMS`` in stock."""
    keys = Keys(namespace)
    init_namespace(r, keys, ShardCounts(2, 2))
    Producer(r, keys, read_counts(r, keys)).publish(
        [AddItem(item_id=i, count=10**6, price=1) for i in ITEMS]
    )
    return keys


def one_marker_each(r: redis.Redis, keys: Keys, users: int, items: int) -> None:
    """Each shard of 2 + 2 holds the marker for ``users`` and ``items`` once."""
    for shard in ("u0", "u1", "i0", "i1"):
        logged = [f for _i, f in r.xrange(keys.events(shard))]
        assert sum(f[EVENT_FIELD] == marker_text(users, items).encode() for f in logged) == 1


def test_grow_reshards_a_live_namespace_and_applies_every_event_once(
    r: redis.Redis, namespace: str
) -> None:
    keys = stocked(r, namespace)
    with running_worker(r, namespace), Publishing(r, keys, read_counts(r, keys)) as pub:
        wait_for(lambda: pub.rounds >= 2, 30, "producers publishing")
        run = Run(r, keys)
        run.take()
        assert (grow(run, 4, 4, wait_s=30).old.users, read_counts(r, keys).users) == (2, 4)
        run.release()
        at = pub.rounds
        wait_for(lambda: pub.rounds >= at + 3 and pub.learner.counts.users == 4, 30, "more")
        pub.halt()
        settled(r, keys, pub, ShardCounts(4, 4))
        for child in ("u2", "u3", "i2", "i3"):  # stale routers reached each through its parent
            assert any(f.get(b"fwd") for _i, f in r.xrange(keys.events(child))), child
    assert r.hget(keys.meta, "reshard_state").decode() == DONE
    one_marker_each(r, keys, 4, 4)


def test_a_run_killed_after_one_marker_is_continued_by_a_re_run(
    r: redis.Redis, namespace: str, env: dict[str, str]
) -> None:
    """``status`` shows the run's progress meanwhile."""
    keys = stocked(r, namespace)
    with running_worker(r, namespace) as w, Publishing(r, keys, read_counts(r, keys)) as pub:
        killed = Run(r, keys)
        killed.take()
        old = read_counts(r, keys)
        killed.begin(old, 8, 2)
        killed.prepare(old, 8, 2)
        r.xadd(keys.events("u1"), {EVENT_FIELD: marker_text(8, 2)})  # then killed
        r.delete(lease_key(keys))  # its lease lapsed
        seeds = [keys.snapshot(s) for s in ("u3", "u5", "u7")]
        wait_for(lambda: r.exists(*seeds) == 3, 30, "u1 split")
        assert read_counts(r, keys).users == 2  # not published before every parent split
        # u1's children are served before the counts are published (their parent let go of
        # their keys' read-model fields)
        held = {"u3", "u5", "u7"}
        wait_for(lambda: held <= {o.name for o in w.ownership.held()}, 30, "u1's children")
        shown = cli_json("status", "--json", env=env)["reshard"]
        assert shown == {
            "target": "8,2",
            "from": "2,2",
            "state": "preparing",
            "split": ["u1"],
            "waiting": ["u0"],
        }
        assert "split: u1; waiting: u0" in cli("status", env=env).stdout
        run = Run(r, keys)
        run.take()
        assert grow(run, 8, 2, wait_s=30).old.users == 2  # from what the killed run recorded
        wait_for(lambda: pub.learner.counts.users == 8, 30, "a producer learning 8")
        run.release()
        pub.halt()
        settled(r, keys, pub, ShardCounts(8, 2))
    one_marker_each(r, keys, 8, 2)
    assert cli_json("status", "--json", env=env)["reshard"]["state"] == DONE


def test_two_growths_in_a_row_forward_through_two_levels(r: redis.Redis, namespace: str) -> None:
    """2+2 -> 4+2 -> 8+2 live: a stale router's event for a key that moved twice goes
    through its parent and its parent's child (path ``u0.u2``, say), applied once."""
    keys = stocked(r, namespace)
    with running_worker(r, namespace), Publishing(r, keys, read_counts(r, keys)) as pub:
        for users in (4, 8):
            run = Run(r, keys)
            run.take()
            grow(run, users, 2, wait_s=30)
            run.release()
            at = pub.rounds
            wait_for(lambda at=at: pub.rounds >= at + 2, 30, "more rounds")
        pub.halt()
        settled(r, keys, pub, ShardCounts(8, 2))
    paths = {f.get(b"fwd") for s in ("u4", "u5", "u6", "u7") for _i, f in r.xrange(keys.events(s))}
    assert {p for p in paths if p and p.count(b".") == 1}, paths  # two hops


def test_a_worker_killed_while_its_shards_split_is_taken_over_once(
    r: redis.Redis, namespace: str
) -> None:
    """Two workers share the shards; one dies (its loop raises: no drain, its leases lapse)
    right after the markers are appended, with batches of the split and the writes of its
    forwards and seeds possibly done but not acked. The other takes its shards over and
    replays them: the reshard completes and every event is applied once."""
    keys = stocked(r, namespace)
    with (
        running_worker(r, namespace, "a") as a,
        running_worker(r, namespace, "b") as b,
        Publishing(r, keys, read_counts(r, keys)) as pub,
    ):
        wait_for(lambda: len(a.ownership.held()) and len(b.ownership.held()), 30, "both own")
        run = Run(r, keys)
        run.take()
        old = read_counts(r, keys)
        run.begin(old, 4, 4)
        run.prepare(old, 4, 4)
        run.mark(old, 4, 4)

        def killed() -> int:
            raise Killed

        a.poll = killed  # type: ignore[method-assign]
        run.wait_seeded(old, 4, 4, timeout_s=30)
        run.publish(4, 4)
        run.finish()
        run.release()
        wait_for(
            lambda: {o.name for o in b.ownership.held()} == set(ShardCounts(4, 4).all_shards()),
            30,
            "b owning every shard",
        )
        at = pub.rounds
        wait_for(lambda: pub.rounds >= at + 2, 30, "more rounds")
        pub.halt()
        settled(r, keys, pub, ShardCounts(4, 4))


def test_a_worker_killed_between_writing_a_split_and_acking_it_writes_nothing_twice(
    r: redis.Redis, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Worker a writes the batch that splits its shard (the seeds, the forwards, the model),
    then dies before acking it; b takes the shard over and replays the batch: the same seeds,
    no forward twice, every event applied once."""
    keys = stocked(r, namespace)
    acked = singleio.ack_all
    with (
        running_worker(r, namespace, "a") as a,
        running_worker(r, namespace, "b") as b,
        Publishing(r, keys, read_counts(r, keys)) as pub,
    ):

        def ack_all(conn: Any, batch: list[Any]) -> None:
            if conn is a.conn and any(w.effects.moved and w.effects.moved.seeds for w in batch):
                a.poll = killed  # type: ignore[method-assign]
                raise Killed  # written, not acked
            acked(conn, batch)

        def killed() -> int:
            raise Killed

        monkeypatch.setattr(singleio, "ack_all", ack_all)
        wait_for(lambda: len(a.ownership.held()) and len(b.ownership.held()), 30, "both own")
        run = Run(r, keys)
        run.take()
        grow(run, 4, 4, wait_s=30)
        run.release()
        assert a.poll is killed  # it died as it split
        at = pub.rounds
        wait_for(lambda: pub.rounds >= at + 2, 30, "more rounds")
        pub.halt()
        settled(r, keys, pub, ShardCounts(4, 4))


def test_a_marker_dead_lettered_by_a_worker_of_an_older_version_is_appended_again(
    r: redis.Redis, namespace: str, env: dict[str, str]
) -> None:
    """A worker that does not apply split markers (the versions before online resharding)
    dead-letters each one as ``unknown_type``: the command stops (exit 1) naming the shards
    and what to do, nothing published; once the workers apply markers, the same command
    appends the marker again to those shards and completes, every event applied once."""
    keys = stocked(r, namespace)
    with Publishing(r, keys, read_counts(r, keys), pace_s=0.05) as pub:
        with running_worker(r, namespace, splits=False):
            wait_for(lambda: pub.rounds >= 2, 30, "producers publishing")
            res = cli("reshard", "--user-shards", "4", "--wait", "60", env=env, check=False)
        assert res.returncode == 1, res.stderr
        assert "the owner of u0 u1 dead-lettered the split marker" in res.stderr
        assert "Upgrade every worker, then re-run the same command" in res.stderr
        assert read_counts(r, keys).users == 2
        assert cli_json("status", "--json", env=env)["reshard"]["dead_lettered"] == ["u0", "u1"]
        assert "the owner of u0 u1 dead-lettered the split marker" in cli("status", env=env).stdout
        with running_worker(r, namespace):
            res = cli("reshard", "--user-shards", "4", "--wait", "60", env=env)
            assert "split markers appended: u0 u1 i0 i1" in res.stderr
            at = pub.rounds
            wait_for(lambda: pub.rounds >= at + 2, 30, "more rounds")
            pub.halt()
            settled(r, keys, pub, ShardCounts(4, 2), dead_markers=True)
