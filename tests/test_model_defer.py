"""The read model's write deferred while a shard is behind (worker/modeldefer.py): which
batches may wait, what the write that ends the wait holds, and, with worker processes, that a
worker SIGKILLed with writes deferred leaves a model the next owner brings to the fold."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import redis

from eventfleet.ledger.bundle import pack
from eventfleet.ledger.events import Topup
from eventfleet.ledger.shards import ShardCounts
from eventfleet.ledger.state import ShardState
from eventfleet.local.fleet import LocalFleet
from eventfleet.local.redisserver import LocalRedis
from eventfleet.producer.client import Producer
from eventfleet.store.keys import EVENT_FIELD, GROUP, Keys
from eventfleet.worker.apply import apply_entries
from eventfleet.worker.model import UPTO
from eventfleet.worker.modeldefer import flush_writes, may_defer
from eventfleet.worker.observe import Observer
from eventfleet.worker.owned import Owned
from eventfleet.worker.scripts import Scripts
from tests.fleet_utils import make_fleet, setup_namespace
from tests.helpers import wait_for
from tests.test_read_model import model_is_the_fold, settle

ONE = ShardCounts(1, 1)


def owned() -> Owned:
    return Owned("u0", 1, "w:1", ShardState("u0"), time.monotonic() + 60, 0.0, 0.0)


def topups(first_seq: int, users: list[int]) -> list[tuple[bytes, list[Any]]]:
    """One entry per 10 top-ups (a bundle), ids after ``first_seq``'s."""
    texts = [
        json.dumps(
            {"type": "topup", "user_id": u, "amount": 5, "source": "p:t", "seq": first_seq + n},
            separators=(",", ":"),
        )
        for n, u in enumerate(users)
    ]
    out = []
    for n in range(0, len(texts), 10):
        (bundle,) = pack(texts[n : n + 10])
        out.append((f"{1000 + first_seq + n}-0".encode(), [EVENT_FIELD, bundle.encode()]))
    return out


def model_fields(fx: Any) -> dict[str, str]:
    pairs = fx.model.args()
    return dict(zip(pairs[0::2], pairs[1::2], strict=True))


def test_full_batches_wait_and_the_next_write_holds_them_at_their_values_now() -> None:
    o = owned()
    first = topups(1, [1, 2] * 10)  # two entries
    assert may_defer(o, first, batch_size=2 * o.per_entry, defer_s=1.0)  # a full read
    assert not may_defer(o, first[:1], batch_size=2 * o.per_entry, defer_s=1.0)  # caught up
    assert not may_defer(o, first, batch_size=2 * o.per_entry, defer_s=0.0)  # off

    fx, acks, n = apply_entries(o, first, ONE, Observer(60), defer=True)
    assert (n, len(acks)) == (20, 2)
    assert not fx.model and o.pending is not None and o.pending.users == {1, 2}

    later = topups(21, [2, 3] * 5)  # user 2 again, and a new one
    fx, _acks, _n = apply_entries(o, later, ONE, Observer(60), defer=False)
    assert o.pending is None
    # one field per user touched since the last write, each at its balance after this batch
    assert model_fields(fx) == {"b:1": "50", "b:2": "75", "b:3": "25", "w:p:t": "30"}


def test_a_wait_ends_at_its_age_with_an_empty_read_and_on_a_flush() -> None:
    o = owned()
    apply_entries(o, topups(1, [7] * 20), ONE, Observer(60), defer=True)
    assert o.pending is not None
    o.pending_since -= 5  # deferred 5 s ago
    assert not may_defer(o, topups(21, [7] * 20), batch_size=2 * o.per_entry, defer_s=1.0)

    (w,) = flush_writes([o, owned()])  # a shard with nothing waiting writes nothing
    assert w.acks == [] and w.upto == o.state.last_id and o.pending is None
    assert model_fields(w.effects) == {"b:7": "100", "w:p:t": "20"}
    assert flush_writes([o]) == []


def test_the_model_is_the_fold_after_a_kill_with_writes_deferred(
    redis_server: LocalRedis, r: redis.Redis, namespace: str, tmp_path: Path,
    fleet_factory: list[LocalFleet],
) -> None:  # fmt: skip
    """A backlog applied in small full batches with the model's writes deferred for up to a
    minute; snapshots every second (a snapshot taken over a deferred batch would leave its
    fields out of the model for good); the worker SIGKILLed halfway, another takes over."""
    counts = setup_namespace(r, namespace, users=2, items=1)
    keys = Keys(namespace)
    users = [1 + n % 300 for n in range(200_000)]
    Producer(r, keys, counts).publish([Topup(user_id=u, amount=1 + u % 7) for u in users])

    def waiting() -> int:  # in the inboxes, or in the logs and not delivered yet
        n = sum(int(r.llen(keys.inbox(s))) + int(r.xlen(keys.events(s))) for s in ("u0", "u1"))
        return n - delivered()

    def delivered() -> int:
        n = 0
        for s in ("u0", "u1"):
            for g in r.xinfo_groups(keys.events(s)):
                if g["name"].decode() == GROUP:
                    n += int(g.get("entries-read") or 0)
        return n

    fleet = make_fleet(
        redis_server.url, namespace, tmp_path, fleet_factory,
        EVENTFLEET_MODEL_DEFER_MS="60000", EVENTFLEET_BATCH_SIZE="200",
    )  # fmt: skip
    w = fleet.start()
    wait_for(lambda: delivered() >= 50, 120, "part of the backlog applied")
    fleet.kill(w)
    assert waiting() > 0, "the backlog was gone before the kill: nothing was tested"
    fleet.start()
    settle(r, namespace, counts)
    model_is_the_fold(r, namespace, counts)
    for s in ("u0", "u1"):
        last: Any = r.xrevrange(keys.events(s), count=1)
        assert r.hget(keys.model(s), UPTO) == last[0][0]  # caught up: nothing left waiting


def test_a_worker_loads_every_script_when_it_starts(
    redis_server: LocalRedis, r: redis.Redis, namespace: str, tmp_path: Path,
    fleet_factory: list[LocalFleet],
) -> None:  # fmt: skip
    """Scripts go by SHA alone: one Redis lacks is a NOSCRIPT and its whole write sent again
    (a deferred backlog's first model write is megabytes), so a worker loads them all at
    start, the read model's among them though no event has come yet."""
    setup_namespace(r, namespace, users=2, items=1)
    r.script_flush()
    shas = [s.sha for s in vars(Scripts(r)).values() if hasattr(s, "sha")]
    assert len(shas) > 10 and not any(r.script_exists(*shas))
    make_fleet(redis_server.url, namespace, tmp_path, fleet_factory).start()
    wait_for(lambda: all(r.script_exists(*shas)), 60, "every script loaded")
