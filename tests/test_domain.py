"""Property tests of the pure domain: invariants, snapshot/restore, codec, dedup."""

from __future__ import annotations

import json
import zlib
from collections import deque

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eventfleet.ledger.codec import DecodeError, decode, encode
from eventfleet.ledger.events import AddItem, Order, Topup
from eventfleet.ledger.rules import StepResult, step
from eventfleet.ledger.shards import ShardCounts, destination, shard_index
from eventfleet.ledger.state import ShardState, SnapshotError

COUNTS = ShardCounts(3, 2)
USERS = st.integers(1, 8)
ITEMS = st.sampled_from(["apple", "pear", "fig", "kiwi"])

topups = st.builds(Topup, user_id=USERS, amount=st.integers(1, 500))
adds = st.builds(AddItem, item_id=ITEMS, count=st.integers(1, 6), price=st.integers(0, 120))
orders = st.builds(
    Order,
    order_id=st.uuids().map(lambda u: u.hex[:12]),
    user_id=USERS,
    item_id=st.sampled_from(["apple", "pear", "fig", "kiwi", "ghost"]),
    qty=st.integers(1, 4),
)
externals = st.lists(st.one_of(topups, adds, orders), min_size=1, max_size=60)


class Network:
    """Every shard in memory; emitted events are queued for their destination shard."""

    def __init__(self) -> None:
        self.states = {s: ShardState(s) for s in COUNTS.all_shards()}
        self.queues: dict[str, deque[str]] = {s: deque() for s in COUNTS.all_shards()}
        self.outcomes: list[dict[str, object]] = []
        self.ids = 0

    def publish(self, events: list[Topup | AddItem | Order]) -> None:
        seqs: dict[str, int] = {}
        for ev in events:
            dest = destination(ev, COUNTS)
            seqs[dest] = seqs.get(dest, 0) + 1
            self.queues[dest].append(encode(ev, "p:test", seqs[dest]))

    def deliver(self, shard: str) -> StepResult:
        self.ids += 1
        res = step(self.states[shard], f"{self.ids}-0", self.queues[shard].popleft(), COUNTS)
        for e in res.emits:
            self.queues[e.dest].append(e.text)
        self.outcomes.extend(o.outcome.model_dump() for o in res.outcomes)
        return res

    def run(self, choices: list[int]) -> None:
        i = 0
        while any(self.queues.values()):
            busy = [s for s, q in self.queues.items() if q]
            shard = busy[choices[i % len(choices)] % len(busy)] if choices else busy[0]
            i += 1
            self.deliver(shard)


@settings(max_examples=150, deadline=None)
@given(events=externals, choices=st.lists(st.integers(0, 50), max_size=40))
def test_invariants_hold_for_any_delivery_order(events: list, choices: list[int]) -> None:
    net = Network()
    net.publish(events)
    net.run(choices)
    balances = {u: b for s in net.states.values() for u, b in s.balances.items()}
    items = {i: it for s in net.states.values() for i, it in s.items.items()}
    assert all(b >= 0 for b in balances.values())
    assert all(it.remain >= 0 for it in items.values())
    confirmed = [o for o in net.outcomes if o["status"] == "confirmed"]
    topped = sum(e.amount for e in events if isinstance(e, Topup))
    assert topped == sum(balances.values()) + sum(int(o["amount"]) for o in confirmed)  # type: ignore[call-overload]
    added = sum(e.count for e in events if isinstance(e, AddItem))
    assert added == sum(it.remain for it in items.values()) + sum(int(o["qty"]) for o in confirmed)  # type: ignore[call-overload]
    order_ids = [e.order_id for e in events if isinstance(e, Order)]
    assert sorted(o["order_id"] for o in net.outcomes) == sorted(order_ids)  # type: ignore[type-var]


def _stream(events: list[Topup | AddItem | Order], shard: str) -> list[str]:
    """The entries of one shard: its events, some re-sent (duplicates), some malformed."""
    mine = [e for e in events if destination(e, COUNTS) == shard]
    out = []
    for n, ev in enumerate(mine, start=1):
        out.append(encode(ev, "p:a", n))
        if n % 3 == 0:
            out.append(encode(ev, "p:a", n))  # a producer retry
        if n % 5 == 0:
            out.append('{"type":"topup","user_id":-1}')
    return out


@settings(max_examples=150, deadline=None)
@given(events=externals, cut=st.integers(0, 100), shard=st.sampled_from(COUNTS.all_shards()))
def test_snapshot_restore_then_fold_equals_straight_fold(
    events: list, cut: int, shard: str
) -> None:
    entries = _stream(events, shard)
    k = min(cut, len(entries))
    straight = ShardState(shard)
    straight_out = [step(straight, f"{i + 1}-0", e, COUNTS) for i, e in enumerate(entries)]
    first = ShardState(shard)
    out = [step(first, f"{i + 1}-0", e, COUNTS) for i, e in enumerate(entries[:k])]
    restored = ShardState.from_snapshot(first.to_snapshot(), shard)
    out += [step(restored, f"{i + 1}-0", e, COUNTS) for i, e in enumerate(entries) if i >= k]
    assert restored.to_snapshot() == straight.to_snapshot()
    assert [(r.kind, r.emits, r.outcomes, r.dead) for r in out] == [
        (r.kind, r.emits, r.outcomes, r.dead) for r in straight_out
    ]


@given(
    ev=st.one_of(topups, adds, orders),
    seq=st.integers(1, 2**53 - 1),
    source=st.sampled_from(["p:abc", "u0", "i12", "p:x.y-z"]),
)
def test_codec_round_trips(ev: Topup | AddItem | Order, seq: int, source: str) -> None:
    text = encode(ev, source, seq)
    wire = decode(text)
    assert (wire.source, wire.seq) == (source, seq)
    assert type(wire).__mro__[1] is type(ev)
    assert wire.model_dump(exclude={"source", "seq", "key"}) == ev.model_dump()
    assert encode(wire, source, seq) == text


@given(
    junk=st.one_of(
        st.binary(max_size=40),
        st.text(max_size=40),
        st.dictionaries(st.text(max_size=5), st.integers(), max_size=4).map(json.dumps),
    )
)
def test_decode_never_raises_anything_but_decode_error(junk: bytes | str) -> None:
    try:
        decode(junk)
    except DecodeError as exc:
        assert exc.reason in {"bad_json", "unknown_type", "invalid_event"}


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"{not json", "bad_json"),
        (b"[1, 2]", "bad_json"),
        (b'{"type": "gift", "source": "p:a", "seq": 1}', "unknown_type"),
        (
            b'{"type": "topup", "user_id": 1, "amount": -5, "source": "p:a", "seq": 1}',
            "invalid_event",
        ),
        (b'{"type": "topup", "amount": 5, "source": "p:a", "seq": 1}', "invalid_event"),
        (
            b'{"type": "topup", "user_id": 1, "amount": "5", "source": "p:a", "seq": 1}',
            "invalid_event",
        ),
        (
            b'{"type": "topup", "user_id": 1, "amount": 5, "source": "p:a", "seq": 1, "x": 1}',
            "invalid_event",
        ),
        (
            b'{"type": "add_item", "item_id": "bad id!", "count": 1, "price": 1, "source": "p:a", "seq": 1}',
            "invalid_event",
        ),
    ],
)
def test_bad_entries_are_dead_lettered_with_reason(raw: bytes, reason: str) -> None:
    state = ShardState("u0")
    res = step(state, "1-0", raw, COUNTS)
    assert res.kind == "dead" and res.dead is not None
    assert res.dead.reason == reason
    assert state.balances == {} and state.watermarks == {}
    assert state.out_seq == {"dlq": 1}


def test_wrong_shard_is_dead_lettered() -> None:
    ev = Topup(user_id=1, amount=5)
    home = destination(ev, COUNTS)
    other = next(s for s in COUNTS.all_shards() if s != home)
    res = step(ShardState(other), "1-0", encode(ev, "p:a", 1), COUNTS)
    assert res.dead is not None and res.dead.reason == "wrong_shard"
    assert home in res.dead.error


def test_same_source_seq_takes_effect_once() -> None:
    shard = destination(Topup(user_id=3, amount=1), COUNTS)
    state = ShardState(shard)
    text = encode(Topup(user_id=3, amount=10), "p:a", 1)
    assert step(state, "1-0", text, COUNTS).kind == "applied"
    assert step(state, "2-0", text, COUNTS).kind == "duplicate"
    assert state.balances == {3: 10}


def test_saga_paths() -> None:
    net = Network()
    net.publish(
        [
            AddItem(item_id="apple", count=5, price=100),
            Topup(user_id=1, amount=250),
            Order(order_id="ok", user_id=1, item_id="apple", qty=2),
            Order(order_id="poor", user_id=1, item_id="apple", qty=1),
            Order(order_id="much", user_id=1, item_id="apple", qty=9),
            Order(order_id="ghost", user_id=1, item_id="nope", qty=1),
        ]
    )
    # deliver item shard events before the user's topup would matter: run in a fixed order
    net.run([])
    by_id = {o["order_id"]: o for o in net.outcomes}
    assert by_id["ok"]["status"] == "confirmed" and by_id["ok"]["amount"] == 200
    assert by_id["poor"]["reason"] == "insufficient_funds"
    assert by_id["much"]["reason"] == "out_of_stock"
    assert by_id["ghost"]["reason"] == "unknown_item" and by_id["ghost"]["amount"] is None
    apple = next(s.items["apple"] for s in net.states.values() if "apple" in s.items)
    assert apple.remain == 3  # 5 - 2 confirmed; the insufficient-funds order was released


def test_shard_hash_is_crc32_of_the_id_text() -> None:
    assert shard_index("apple", 16) == zlib.crc32(b"apple") % 16
    assert shard_index(42, 7) == zlib.crc32(b"42") % 7
    assert shard_index("caf\u00e9", 5) == zlib.crc32("caf\u00e9".encode()) % 5


def test_snapshot_of_another_shard_is_refused() -> None:
    with pytest.raises(SnapshotError):
        ShardState.from_snapshot(ShardState("u1").to_snapshot(), "u2")
    with pytest.raises(SnapshotError):
        ShardState.from_snapshot(b"garbage", "u2")


@settings(max_examples=150, deadline=None)
@given(
    picks=st.lists(
        st.tuples(st.sampled_from([1, 2, 4]), st.sampled_from(["o-1", "o-2"]), st.booleans()),
        min_size=1,
        max_size=30,
    ),
    per_user=st.booleans(),
)
def test_an_order_is_a_users_order_id(picks: list[tuple[int, str, bool]], per_user: bool) -> None:
    """A user shard decides each (user, order id) once: the first charge or reject of a user's
    id is its outcome, later ones of that user are duplicates, another user's is its own. A
    namespace made before (``orders_per_user=False``) decides each id once per shard."""
    counts = ShardCounts(1, 1, orders_per_user=per_user)
    st_ = ShardState("u0")
    decided: dict[object, str] = {}
    for n, (uid, oid, charge) in enumerate(picks, start=1):
        common = {"order_id": oid, "user_id": uid, "item_id": "fig", "qty": 1, "seq": n}
        ev = (
            {"type": "charge", "amount": 0, **common}
            if charge
            else {"type": "reject", "reason": "out_of_stock", "amount": 5, **common}
        )
        res = step(st_, f"{n}-0", json.dumps({**ev, "source": "i0"}), counts)
        (rec,) = res.outcomes
        key = (uid, oid) if per_user else oid
        want = "duplicate" if key in decided else ("confirmed" if charge else "rejected")
        decided.setdefault(key, want)
        assert rec.status == want, (picks, n)
    again = ShardState.from_snapshot(st_.to_snapshot(), "u0")
    assert again.orders == st_.orders


def test_a_snapshot_written_before_entries_were_counted_still_loads() -> None:
    """Existing data keeps working: a snapshot without ``entries`` (written before states
    counted their log entries) loads with the count unknown and is written back without one
    (``verify`` then skips the check it feeds); a new one round-trips its count."""
    st_ = ShardState("u1")
    step(st_, "5-0", encode(Topup(user_id=3, amount=7), "p:a", 1), COUNTS)
    st_.entries = 1
    doc = json.loads(st_.to_snapshot())
    assert doc["entries"] == 1
    assert ShardState.from_snapshot(st_.to_snapshot(), "u1").entries == 1
    del doc["entries"]
    old = ShardState.from_snapshot(json.dumps(doc), "u1")
    assert not old.entries_known and old.balances == {3: 7}
    assert "entries" not in json.loads(old.to_snapshot())
