"""Online resharding, a whole fleet folded in memory (docs/DESIGN-DECISIONS.md section 35):
logs, owners stepping them in an order hypothesis picks, emitted and forwarded events appended
where the stepping shard sends them, children stepping only once their seed exists, while
producers of the client library (``Stamper``: a seq counter per shard, regrown when it
switches) and a named source switch from the old counts to the new ones at any moment and
retry, and the counts grow once or twice."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eventfleet.ledger import split as shard_split
from eventfleet.ledger.codec import decode
from eventfleet.ledger.events import AddItem, Event, Order, Topup
from eventfleet.ledger.results import ForwardResult, SplitResult
from eventfleet.ledger.rules import step_entry
from eventfleet.ledger.shards import ShardCounts, destination, item_shard, user_shard
from eventfleet.ledger.state import ShardState
from eventfleet.producer.client import Stamper
from eventfleet.store.keys import Keys
from tests.test_split import as_text, counts

USERS = range(1, 13)
ITEMS = [f"it{n}" for n in range(8)]
PRICE = 3


def event_id(wire: Event) -> tuple[str, int, str, str]:
    """What names a producer's event here: its source and seq, and its type and key (the
    client's seqs count per shard, so a seq alone repeats across shards)."""
    key = str(getattr(wire, "user_id", "")) if wire.type == "topup" else wire.item_id
    return wire.source, wire.seq, wire.type, key  # type: ignore[union-attr]


@dataclass
class Fleet:
    init: ShardCounts
    states: dict[str, ShardState] = field(default_factory=dict)
    logs: dict[str, list[tuple[str, str, str]]] = field(default_factory=dict)
    pos: Counter[str] = field(default_factory=Counter)
    clock: int = 1_000
    applied: Counter[tuple[str, int, str, str]] = field(default_factory=Counter)
    decided: dict[str, tuple[str, int, int, str]] = field(default_factory=dict)
    decisions: Counter[str] = field(default_factory=Counter)
    paid: Counter[int] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        for name in self.init.all_shards():
            self.states[name] = ShardState(name)
            self.logs[name] = []

    def append(self, shard: str, text: str, path: str = "", scope: str = "") -> None:
        self.logs.setdefault(shard, []).append((text, path, scope))

    def step_one(self, shard: str) -> bool:
        state = self.states.get(shard)
        log = self.logs.get(shard, [])
        if state is None or self.pos[shard] >= len(log):
            return False  # a child waits for its seed
        text, path, scope = log[self.pos[shard]]
        self.pos[shard] += 1
        self.clock += 1
        eid = f"{self.clock}-0"
        for res in step_entry(
            state, eid, text.encode(), self.init, scope=scope, fwd=path, splits=True
        ):
            assert res.kind != "dead", res.dead
            if isinstance(res, SplitResult):
                for name, seed in res.seeds.items():
                    assert name not in self.states
                    self.states[name] = seed
            if isinstance(res, ForwardResult) and res.forward is not None:
                f = res.forward
                self.append(f.dest, as_text(f.text), f.path, f.scope)
            for e in res.emits:
                self.append(e.dest, e.text)
            if res.kind == "applied" and res.wire is not None and "/" in res.wire.source:
                self.applied[event_id(res.wire)] += 1
            for rec in res.outcomes:
                o = rec.outcome
                key = f"{o.user_id}/{o.order_id}"
                self.decisions[key] += 1
                self.decided[key] = (rec.status, o.user_id, o.qty, o.item_id)
                if rec.status == "confirmed":
                    assert o.amount is not None
                    self.paid[o.user_id] += o.amount
        return True

    def reshard(self, before: tuple[int, int], after: tuple[int, int]) -> None:
        """The command's order: every shard of the last reshard seeded (the run before ends
        only then), then a marker in each shard's log."""
        shards = counts(*before).all_shards()
        while any(s not in self.states for s in shards):
            assert any(self.step_one(s) for s in sorted(self.logs))
        for name in shards:
            self.append(name, shard_split.marker_text(*after))

    def drain(self) -> None:
        while any(self.step_one(s) for s in sorted(self.logs)):
            pass


events = st.lists(
    st.tuples(
        st.integers(0, 2),  # producer
        st.sampled_from(["topup", "add", "order", "retry", "switch", "step", "step", "reshard"]),
        st.sampled_from(list(USERS)),
        st.sampled_from(ITEMS),
        st.integers(0, 40),  # which shard steps
    ),
    min_size=30,
    max_size=250,
)


@settings(max_examples=200, deadline=None)
@given(
    script=events,
    start=st.sampled_from([(1, 1), (2, 2), (2, 1)]),
    growth=st.lists(st.sampled_from([(2, 2), (2, 1), (1, 2), (3, 1)]), min_size=1, max_size=2),
)
def test_a_fleet_split_under_load_applies_every_event_once_on_the_right_shard(
    script: list[tuple[int, str, int, str, int]],
    start: tuple[int, int],
    growth: list[tuple[int, int]],
) -> None:
    init = counts(*start)
    fleet = Fleet(init)
    levels = [start]
    for ku, ki in growth:
        levels.append((levels[-1][0] * ku, levels[-1][1] * ki))
    published = 0  # how many levels the command has published
    # producers 0 and 1 are the client library (a seq counter per shard, regrown when it
    # switches); producer 2 a named source numbering its events like file lines
    stampers = [Stamper(Keys("t"), init, f"p:w{who}", "app") for who in range(3)]
    lines = 0
    last: list[tuple[str, str] | None] = [None, None, None]
    topped: Counter[int] = Counter()
    stock: Counter[str] = Counter()
    sent: set[tuple[str, int, str, str]] = set()
    for who, what, user, item, which in script:
        if what == "reshard" and published + 1 < len(levels):
            published += 1
            fleet.reshard(levels[published - 1], levels[published])
        elif what == "switch":
            stampers[who].regrow(counts(*levels[published]))
        elif what == "step":
            fleet.step_one(sorted(fleet.logs)[which % len(fleet.logs)])
        elif what == "retry" and last[who] is not None:
            dest, text = last[who]  # type: ignore[misc]
            fleet.append(dest, text, scope="app")
        elif what in ("topup", "add", "order"):
            event: Event
            if what == "topup":
                event = Topup(user_id=user, amount=10)
                topped[user] += 10
            elif what == "add":
                event = AddItem(item_id=item, count=2, price=PRICE)
                stock[item] += 2
            else:
                event = Order(order_id=f"o{len(sent)}", user_id=user, item_id=item, qty=1)
            stamper = stampers[who]
            dest = destination(event, stamper.counts)
            lines += 1
            _, text = stamper.stamp(event, lines if who == 2 else None)
            fleet.append(dest, text, scope="app")
            last[who] = (dest, text)
            source, seq, kind, key = event_id(decode(text))
            sent.add((f"app/{source}", seq, kind, key))
    while published + 1 < len(levels):  # the command finishes
        published += 1
        fleet.reshard(levels[published - 1], levels[published])
    fleet.drain()
    final = counts(*levels[-1])
    assert sorted(fleet.states) == sorted(final.all_shards())
    # every event once, on its shard under the final counts
    assert fleet.applied == Counter(sent)
    assert all(n == 1 for n in fleet.decisions.values())
    balances: dict[int, int] = {}
    remain: dict[str, int] = {}
    for name, state in fleet.states.items():
        assert state.routing in (None, levels[-1]) or levels[-1] == start
        for uid, bal in state.balances.items():
            assert user_shard(uid, final) == name and uid not in balances
            balances[uid] = bal
        for iid, it in state.items.items():
            assert item_shard(iid, final) == name and iid not in remain
            remain[iid] = it.remain
    paid = fleet.paid
    sold: Counter[str] = Counter()
    for status, _, qty, iid in fleet.decided.values():
        if status == "confirmed":
            sold[iid] += qty
    assert {u: b for u, b in balances.items() if b} == {
        u: topped[u] - paid[u] for u in topped if topped[u] - paid[u]
    }
    assert remain == {i: stock[i] - sold[i] for i in stock}


def test_the_client_starts_a_new_shards_counter_at_its_parents() -> None:
    stamper = Stamper(Keys("t"), counts(2, 2), "p:c")
    for user in (1, 1, 3, 3, 3):
        stamper.stamp(Topup(user_id=user, amount=1))
    before = dict(stamper.seq)
    stamper.regrow(counts(8, 2))
    for child in range(2, 8):
        assert stamper.seq.get(f"u{child}") == before.get(f"u{child % 2}")
    _, text = stamper.stamp(Topup(user_id=3, amount=1))  # u3 under 8: a child of u1
    assert decode(text).seq == before[user_shard(3, counts(2, 2))] + 1
    for bad in (counts(4, 2), counts(12, 2), counts(8, 3)):
        with pytest.raises(ValueError, match="cannot go from"):
            stamper.regrow(bad)
