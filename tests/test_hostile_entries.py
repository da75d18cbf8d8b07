"""Hostile entries against the pure code: nothing an entry holds raises out of decoding or
``step``, every failure is a dead letter with a reason, and a step applies whole or not at all.

The live counterparts (a real worker, ``verify`` and ``state`` on the same entries) are in
``tests/test_hostile_live.py``.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eventfleet.ledger import rules
from eventfleet.ledger.codec import MAX_ENTRY_BYTES, DecodeError, decode, encode, loads_object
from eventfleet.ledger.events import MAX_INT, AddItem, Charge, Order, Release, Topup
from eventfleet.ledger.rules import step
from eventfleet.ledger.shards import ShardCounts, destination, item_shard, user_shard
from eventfleet.ledger.state import Item, ShardState

COUNTS = ShardCounts(2, 2)
DEEP = 30_000
"""Nesting deeper than any recursion limit, yet under ``MAX_ENTRY_BYTES``."""

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=20,
)
FIELDS = ("type", "source", "seq", "user_id", "amount", "item_id", "count", "price", "order_id")
TYPES = ("topup", "add_item", "order", "charge", "release", "reject")
near_events = st.fixed_dictionaries(
    {"type": st.sampled_from(TYPES) | json_values},
    optional={
        f: json_values | st.integers(-(2**70), 2**70) | st.sampled_from(["p:x", "u0", "i1", "a"])
        for f in FIELDS[1:]
    },
)


def _state(shard: str) -> ShardState:
    st_ = ShardState(shard)
    st_.balances = {1: 100, 2: MAX_INT}
    st_.items = {"apple": Item(3, 5), "gold": Item(MAX_INT, 10)}
    st_.watermarks = {"p:x": 2}
    st_.out_seq = {"u0": 4, "dlq": 1}
    return st_


def _snapshot(s: ShardState) -> dict[str, Any]:
    return {
        "balances": dict(s.balances),
        "items": {k: (v.price, v.remain) for k, v in s.items.items()},
        "watermarks": dict(s.watermarks),
        "out_seq": {k: v for k, v in s.out_seq.items() if k != "dlq"},
        "applied": s.applied,
    }


def _check_result(before: dict[str, Any], s: ShardState, res: rules.StepResult) -> None:
    if res.kind == "dead":
        assert res.dead is not None and res.dead.reason and res.dead.error
        assert len(res.dead.error) <= 600
        assert _snapshot(s) == before  # nothing but the dead-letter seq moved
    elif res.kind == "duplicate":
        assert _snapshot(s) == before


@settings(max_examples=300, deadline=None)
@given(raw=st.binary(max_size=300), shard=st.sampled_from(COUNTS.all_shards()))
def test_arbitrary_bytes_never_raise(raw: bytes, shard: str) -> None:
    s = _state(shard)
    before = _snapshot(s)
    res = step(s, "5-0", raw, COUNTS)
    _check_result(before, s, res)
    assert s.last_id == "5-0"


@settings(max_examples=400, deadline=None)
@given(doc=near_events, shard=st.sampled_from(COUNTS.all_shards()), inbox=st.booleans())
def test_arbitrary_json_never_raises(doc: dict[str, Any], shard: str, inbox: bool) -> None:
    s = _state(shard)
    before = _snapshot(s)
    res = step(s, "5-0", json.dumps(doc), COUNTS, from_inbox=inbox)
    _check_result(before, s, res)
    if res.kind == "applied":
        assert all(v <= MAX_INT for v in s.balances.values())
        assert all(0 <= it.remain <= MAX_INT for it in s.items.values())


@pytest.mark.parametrize(
    "raw",
    [
        "[" * DEEP,
        "[" * DEEP + "]" * DEEP,
        '{"type":"topup","user_id":1,"amount":1,"source":"p:x","seq":9,"x":' + "[" * DEEP + "}",
        "{" + '"a":{' * (DEEP // 5),
        "[" * 100_000,
        '{"type":"topup","user_id":1,"amount":' + "9" * 5000 + ',"source":"p:x","seq":9}',
        "x" * (MAX_ENTRY_BYTES + 1),
        b"\xff\xfe\x00",
    ],
    ids=["deep", "deep-closed", "deep-field", "deep-objects", "100k", "huge-int", "long", "bytes"],
)
def test_pathological_entries_are_dead_letters(raw: str | bytes) -> None:
    with pytest.raises(DecodeError):
        decode(raw)
    s = _state("u0")
    res = step(s, "7-0", raw, COUNTS)
    assert res.kind == "dead" and res.dead is not None
    assert res.dead.reason in {"bad_json", "too_large", "invalid_event"}
    assert len(res.dead.raw) <= MAX_ENTRY_BYTES
    assert loads_object(raw) is None or isinstance(loads_object(raw), dict)


def test_loads_object_never_raises_on_deep_input() -> None:
    assert loads_object("[" * DEEP + "]" * DEEP) is None
    assert loads_object('{"a":' * 20_000 + "1" + "}" * 20_000) is None
    assert loads_object('{"a": 1}') == {"a": 1}


def test_order_whose_amount_overflows_is_rejected_and_stock_untouched() -> None:
    s = _state(item_shard("gold", COUNTS))
    s.items = {"gold": Item(MAX_INT, 10)}
    order = Order(order_id="o1", user_id=1, item_id="gold", qty=2)
    res = step(s, "9-0", encode(order, "p:x", 3), COUNTS)
    assert res.kind == "applied"
    assert s.items["gold"].remain == 10
    [emit] = res.emits
    sent = decode(emit.text)
    assert sent.type == "reject" and sent.reason == "amount_too_large"  # type: ignore[union-attr]
    assert emit.dest == user_shard(1, COUNTS)
    # the user's shard records the rejected outcome
    u = ShardState(emit.dest)
    out = step(u, "1-0", emit.text, COUNTS)
    assert [o.outcome.reason for o in out.outcomes] == ["amount_too_large"]


@pytest.mark.parametrize(
    ("event", "reason"),
    [
        (Topup(user_id=2, amount=1), "balance_overflow"),
        (AddItem(item_id="gold", count=MAX_INT, price=1), "stock_overflow"),
        (Release(order_id="o", item_id="gold", qty=MAX_INT), "stock_overflow"),
        (Release(order_id="o", item_id="nothing", qty=1), "unknown_item"),
    ],
)
def test_overflowing_sums_are_refused_with_a_reason(
    event: Topup | AddItem | Release, reason: str
) -> None:
    shard = destination(event, COUNTS)
    s = _state(shard)
    before = _snapshot(s)
    source = "p:x" if not isinstance(event, Release) else "u1"
    res = step(s, "9-0", encode(event, source, 5), COUNTS)
    assert res.kind == "dead" and res.dead is not None and res.dead.reason == reason
    assert _snapshot(s) == before


internal = st.sampled_from(
    [
        Charge(order_id="f", user_id=1, item_id="apple", qty=1, amount=10**6),
        Release(order_id="f", item_id="apple", qty=1_000_000),
    ]
)


@settings(max_examples=50, deadline=None)
@given(event=internal, seq=st.integers(1, MAX_INT), source=st.sampled_from(["i0", "i1", "u0"]))
def test_forged_internal_events_from_the_inbox_never_take_effect(
    event: Charge | Release, seq: int, source: str
) -> None:
    shard = destination(event, COUNTS)
    s = _state(shard)
    before = _snapshot(s)
    res = step(s, "9-0", encode(event, source, seq), COUNTS, from_inbox=True)
    assert res.kind == "dead" and res.dead is not None
    assert res.dead.reason == "forged_internal"
    assert _snapshot(s) == before  # no watermark moved


def test_a_shard_source_through_the_inbox_is_refused() -> None:
    top = Topup(user_id=1, amount=5)
    s = _state(destination(top, COUNTS))
    res = step(s, "9-0", encode(top, "i0", 10**12), COUNTS, from_inbox=True)
    assert res.dead is not None and res.dead.reason == "forged_source"
    assert "i0" not in s.watermarks
    ok = step(s, "9-1", encode(top, "p:x", 3), COUNTS, from_inbox=True)
    assert ok.kind == "applied"


class Boom(Exception):
    pass


step_events = st.one_of(
    st.builds(Topup, user_id=st.integers(1, 3), amount=st.integers(1, 50)),
    st.builds(
        AddItem,
        item_id=st.sampled_from(["apple", "pear"]),
        count=st.integers(1, 5),
        price=st.just(3),
    ),
    st.builds(
        Order,
        order_id=st.just("o"),
        user_id=st.integers(1, 3),
        item_id=st.sampled_from(["apple", "pear", "ghost"]),
        qty=st.integers(1, 3),
    ),
    st.builds(
        Charge,
        order_id=st.just("o"),
        user_id=st.integers(1, 3),
        item_id=st.just("apple"),
        qty=st.just(1),
        amount=st.integers(0, 200),
    ),
)


@settings(max_examples=200, deadline=None)
@given(event=step_events, fail_at=st.sampled_from(["_emit", "_outcome"]))
def test_a_step_that_fails_midway_leaves_the_state_as_it_was(
    event: Topup | AddItem | Order | Charge, fail_at: str
) -> None:
    """Whatever a rule changed before it failed is put back, and the entry is a dead letter."""
    shard = destination(event, COUNTS)
    s = _state(shard)
    s.items = {"apple": Item(3, 5)}
    s.balances = {1: 100, 2: 5}
    source = "i0" if isinstance(event, Charge) else "p:x"
    expected = copy.deepcopy(s)
    real = getattr(rules, fail_at)

    def failing(*args: Any) -> Any:
        real(*args)  # the change is made, then the rule fails
        raise Boom("injected")

    mp = pytest.MonkeyPatch()
    mp.setattr(rules, fail_at, failing)
    try:
        res = step(s, "9-0", encode(event, source, 7), COUNTS)
    finally:
        mp.undo()
    if res.kind == "dead":
        assert res.dead is not None and res.dead.reason == "handler_error"
        assert _snapshot(s) == _snapshot(expected)
    else:  # this event's rule never reached the failing helper: applied whole
        clean = step(expected, "9-0", encode(event, source, 7), COUNTS)
        assert clean.kind == res.kind and _snapshot(s) == _snapshot(expected)
