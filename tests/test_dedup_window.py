"""Property tests of the windowed dedup (eventfleet/ledger/dedup.py): decided from entry-id time only, so
any fold of the same log, straight or resumed from a snapshot, gives the same state; bounded
by the window; idempotency keys and order ids take effect once within it."""

from __future__ import annotations

from collections import Counter, deque

from hypothesis import given, settings
from hypothesis import strategies as st

from eventfleet.ledger.codec import encode
from eventfleet.ledger.events import AddItem, Order, Topup
from eventfleet.ledger.rules import step
from eventfleet.ledger.shards import ShardCounts, destination, user_shard
from eventfleet.ledger.state import ShardState

WINDOW = 1000
ONE = ShardCounts(1, 1, WINDOW)

entries = st.lists(
    st.tuples(
        st.integers(0, 5),  # which producer
        st.integers(0, 3),  # how far its seq jumps (0: a retry of its last one)
        st.integers(0, 700),  # ms since the previous entry
        st.one_of(st.none(), st.sampled_from(["k1", "k2", "k3"])),  # idempotency key
    ),
    min_size=1,
    max_size=80,
)


def _log(spec: list[tuple[int, int, int, str | None]]) -> list[tuple[str, str]]:
    seqs: Counter[int] = Counter()
    now, log = 1_000_000, []
    for n, (who, jump, gap, key) in enumerate(spec):
        seqs[who] = max(1, seqs[who] + jump)
        now += gap
        text = encode(Topup(user_id=1 + n % 3, amount=1 + n), f"p:s{who}", seqs[who], key)
        log.append((f"{now}-{n}", text))
    return log


@settings(max_examples=200, deadline=None)
@given(spec=entries, cut=st.integers(0, 80))
def test_resumed_fold_equals_straight_fold(spec: list, cut: int) -> None:
    log = _log(spec)
    straight = ShardState("u0")
    want = [step(straight, eid, text, ONE).kind for eid, text in log]
    first = ShardState("u0")
    got = [step(first, eid, text, ONE).kind for eid, text in log[:cut]]
    resumed = ShardState.from_snapshot(first.to_snapshot(), "u0")
    got += [step(resumed, eid, text, ONE).kind for eid, text in log[cut:]]
    assert got == want
    assert resumed.to_snapshot() == straight.to_snapshot()


@settings(max_examples=200, deadline=None)
@given(spec=entries)
def test_state_holds_only_what_the_window_may_still_need(spec: list) -> None:
    log = _log(spec)
    state = ShardState("u0")
    for eid, text in log:
        step(state, eid, text, ONE)
    last = int(log[-1][0].split("-")[0])
    for t in [*state.seen.values(), *state.keys.values()]:
        assert last - t <= WINDOW + WINDOW // 4
    assert set(state.watermarks) == set(state.seen)


def test_a_retry_older_than_the_window_takes_effect_again() -> None:
    state = ShardState("u0")
    text = encode(Topup(user_id=1, amount=5), "p:a", 1)
    assert step(state, "1000-0", text, ONE).kind == "applied"
    assert step(state, f"{1000 + WINDOW}-0", text, ONE).kind == "duplicate"
    # the retry above kept p:a alive; silence longer than the window forgets it
    assert step(state, f"{1001 + 2 * WINDOW}-0", text, ONE).kind == "applied"
    assert state.balances[1] == 10


def test_an_idempotency_key_holds_for_the_window_from_its_event() -> None:
    state = ShardState("u0")
    for n, t in enumerate([1000, 1500, 1000 + WINDOW]):
        res = step(state, f"{t}-0", encode(Topup(user_id=1, amount=5), f"p:r{n}", 1, "k"), ONE)
        assert res.kind == ("applied" if n == 0 else "duplicate") and res.by_key == (n > 0)
    late = encode(Topup(user_id=1, amount=5), "p:r9", 1, "k")
    assert step(state, f"{1001 + WINDOW}-0", late, ONE).kind == "applied"
    assert state.balances[1] == 10


def test_a_million_one_shot_producers_leave_a_window_sized_state() -> None:
    """One producer per ms of entry time, each heard once: the state keeps ~1.25 windows."""
    state = ShardState("u0")
    template = encode(Topup(user_id=1, amount=1), "p:X", 1)
    head, tail = template.split('"p:X"')
    for n in range(1, 1_000_001):
        step(state, f"{n}-0", f'{head}"p:{n}"{tail}', ONE)
    assert state.balances[1] == 1_000_000
    assert len(state.seen) <= WINDOW + WINDOW // 4 + 1
    assert len(state.to_snapshot()) < 60_000


# ---------------------------------------------------------------- order ids, all shards

COUNTS = ShardCounts(2, 3, WINDOW)
ITEMS = ["apple", "pear", "fig", "kiwi"]
orders = st.builds(
    Order,
    order_id=st.sampled_from(["o1", "o2", "o3"]),
    user_id=st.just(1),
    item_id=st.sampled_from([*ITEMS, "ghost"]),
    qty=st.integers(1, 4),
)
topups = st.builds(Topup, user_id=st.just(1), amount=st.integers(1, 400))
adds = st.builds(
    AddItem, item_id=st.sampled_from(ITEMS), count=st.integers(1, 6), price=st.integers(0, 90)
)


@settings(max_examples=200, deadline=None)
@given(
    events=st.lists(st.one_of(topups, adds, orders), min_size=1, max_size=50),
    choices=st.lists(st.integers(0, 50), max_size=40),
)
def test_an_order_id_is_decided_once_whatever_repeats_it(events: list, choices: list[int]) -> None:
    states = {s: ShardState(s) for s in COUNTS.all_shards()}
    queues: dict[str, deque[str]] = {s: deque() for s in COUNTS.all_shards()}
    seqs: Counter[str] = Counter()
    for ev in events:
        dest = destination(ev, COUNTS)
        seqs[dest] += 1
        queues[dest].append(encode(ev, "p:t", seqs[dest]))
    outcomes = []
    i = n = 0
    while any(queues.values()):
        busy = [s for s, q in queues.items() if q]
        shard = busy[choices[i % len(choices)] % len(busy)] if choices else busy[0]
        i, n = i + 1, n + 1
        res = step(states[shard], f"{n}-0", queues[shard].popleft(), COUNTS)
        for e in res.emits:
            queues[e.dest].append(e.text)
        outcomes += [o.outcome for o in res.outcomes]
    decided = Counter(o.order_id for o in outcomes if o.status != "duplicate")
    placed = Counter(e.order_id for e in events if isinstance(e, Order))
    assert set(decided) == set(placed) and set(decided.values()) <= {1}
    assert len(outcomes) == sum(placed.values())
    confirmed = [o for o in outcomes if o.status == "confirmed"]
    home = states[user_shard(1, COUNTS)]
    topped = sum(e.amount for e in events if isinstance(e, Topup))
    assert topped == home.balances.get(1, 0) + sum(o.amount or 0 for o in confirmed)
    added = sum(e.count for e in events if isinstance(e, AddItem))
    remain = sum(it.remain for s in states.values() for it in s.items.values())
    assert added == remain + sum(o.qty for o in confirmed)
    assert home.duplicate_orders == sum(placed.values()) - len(placed)
