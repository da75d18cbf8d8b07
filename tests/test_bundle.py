"""Bundles (ledger.bundle): several events in one stream entry, each folded on its own."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from eventfleet.ledger.bundle import (
    MAX_EVENTS,
    MAX_PACK_CHARS,
    MAX_SPLIT_EVENTS,
    is_bundle,
    pack,
    split,
)
from eventfleet.ledger.codec import charge_text, encode
from eventfleet.ledger.events import Topup
from eventfleet.ledger.shards import ShardCounts, user_shard
from eventfleet.ledger.state import ShardState
from eventfleet.store.fold import fold_entry

COUNTS = ShardCounts(users=4, items=4)
USERS = [u for u in range(1, 500) if user_shard(u, COUNTS) == "u0"]


def topup(user: int, amount: int, seq: int, source: str = "p:t") -> str:
    return encode(Topup(user_id=user, amount=amount), source, seq)


texts = st.lists(
    st.builds(
        topup,
        st.sampled_from(USERS),
        st.integers(1, 10**12),
        st.integers(1, 10**9),
        st.from_regex(r"p:[A-Za-z0-9_.:-]{1,64}", fullmatch=True),
    ),
    min_size=0,
    max_size=250,
)


@given(texts)
@settings(max_examples=200, deadline=None)
def test_pack_then_split_gives_back_every_text_in_order(events: list[str]) -> None:
    bundles = pack(events)
    assert [t for b in bundles for t in split(b)] == events
    assert [t for b in bundles for t in split(b.encode())] == [e.encode() for e in events]
    for b in bundles:
        assert len(split(b)) <= MAX_EVENTS
        assert len(b) <= MAX_PACK_CHARS or not is_bundle(b)
    if len(events) == 1:
        assert bundles == events  # a lone event is written as its object alone


@given(st.binary(max_size=3000) | st.text(max_size=3000).map(str.encode))
@settings(max_examples=500, deadline=None)
def test_split_never_raises_and_always_hands_out_something(raw: bytes) -> None:
    parts = split(raw)
    assert 1 <= len(parts) <= MAX_SPLIT_EVENTS
    assert all(isinstance(p, bytes) for p in parts)


def folded(raw: bytes, *, from_inbox: bool = True) -> tuple[ShardState, list[str]]:
    """Fold one entry into a fresh u0; the reasons of its dead letters."""
    state = ShardState("u0")
    dead: list[str] = []

    def on_step(_eid: str, _raw: bytes | None, res: object) -> None:
        letter = getattr(res, "dead", None)
        if letter is not None:
            dead.append(letter.reason)

    fold_entry(state, "1700000000000-0", raw, from_inbox, COUNTS, False, on_step)
    return state, dead


def test_a_bad_element_is_dead_lettered_alone_and_its_neighbours_apply() -> None:
    a, b = USERS[0], USERS[1]
    nested = "[" * 5000 + "]" * 5000
    raw = f'[{topup(a, 5, 1)},{{"type":"topup"}},{nested},{topup(b, 7, 2)}]'.encode()
    state, dead = folded(raw)
    assert state.balances == {a: 5, b: 7}
    assert dead == ["invalid_event", "bad_json"]
    assert state.last_id == "1700000000000-0"


def test_a_forged_internal_event_in_a_producer_bundle_never_takes_effect() -> None:
    a = USERS[0]
    forged = charge_text("o1", a, "sku", 1, 10**6, None, "i0", 10**6)
    raw = f"[{topup(a, 50, 1)},{forged},{topup(a, 1, 2)}]".encode()
    state, dead = folded(raw)
    assert state.balances == {a: 51}
    assert dead == ["forged_internal"]
    assert "i0" not in state.watermarks


def test_duplicates_inside_and_across_bundles_are_dropped_by_seq() -> None:
    a = USERS[0]
    state = ShardState("u0")
    first = pack([topup(a, 1, s) for s in range(1, 11)])[0].encode()
    again = pack([topup(a, 1, s) for s in range(5, 16)])[0].encode()  # 5..10 seen already
    fold_entry(state, "1700000000000-0", first, True, COUNTS, False)
    fold_entry(state, "1700000000001-0", again, True, COUNTS, False)
    assert state.balances == {a: 15}


def test_odd_arrays_are_split_by_parsing_and_empty_or_huge_ones_stay_whole() -> None:
    a = USERS[0]
    spaced = f'  [ {topup(a, 1, 1)} ,\n {{"x": [1, 2]}} ]  '
    parts = split(spaced)
    assert parts == [topup(a, 1, 1), '{"x": [1, 2]}']  # the writer's own text
    quoted = '[{"a":"}],[{\\\\"},{"b":"\\"x"}]'
    assert split(quoted) == ['{"a":"}],[{\\\\"}', '{"b":"\\"x"}']
    assert [json.loads(p) for p in split(quoted)] == [{"a": "}],[{\\"}, {"b": '"x'}]
    assert split('[{"a":1}] tail') == ('[{"a":1}] tail',)
    assert split('[{"a":"open]') == ('[{"a":"open]',)
    assert split("[1,,2]") == ("[1,,2]",)
    assert split(b"[]") == (b"[]",)
    many = ("[" + ",".join(["{}"] * (MAX_SPLIT_EVENTS + 1)) + "]").encode()
    assert split(many) == (many,)
    state, dead = folded(b"[]")
    assert dead == ["bad_json"] and state.balances == {}


elements = st.one_of(
    st.builds(topup, st.sampled_from(USERS), st.integers(1, 10**6), st.integers(1, 50)),
    st.builds(
        '{{"type":"topup","user_id":{},"amount":{},"source":"p:t","seq":{}}}'.format,
        st.integers(1, 500),
        st.integers(-5, 10**17),
        st.integers(0, 50),
    ),
    st.builds(
        lambda s: charge_text("o1", USERS[0], "sku", 1, 5, None, s, 3),
        st.sampled_from(["i0", "p:x"]),
    ),
    st.sampled_from(['{"type":"topup"}', "{}", '{"a":[1,{"b":"}"}]}', "7", '"x"', "[]"]),
)


@given(
    st.lists(elements, min_size=1, max_size=30),
    st.sampled_from([",", " , ", ",\n"]),
    st.booleans(),
)
@settings(max_examples=300, deadline=None)
def test_a_bundle_in_one_step_equals_its_events_one_by_one(
    parts: list[str], sep: str, from_inbox: bool
) -> None:
    from eventfleet.ledger.rules import step, step_entry

    raw = f"[{sep.join(parts)}]".encode()
    one, each = ShardState("u0"), ShardState("u0")
    whole = step_entry(one, "1700000000000-0", raw, COUNTS, from_inbox=from_inbox)
    split_up = [step(each, "1700000000000-0", t, COUNTS, from_inbox=from_inbox) for t in split(raw)]
    each.entries += 1  # step_entry counts the entry, step alone does not (as store.fold does)
    assert one == each
    assert [(r.kind, r.emits, r.outcomes, r.dead, r.wire) for r in whole] == [
        (r.kind, r.emits, r.outcomes, r.dead, r.wire) for r in split_up
    ]
