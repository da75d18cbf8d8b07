"""Online resharding in the pure domain (eventfleet/ledger/split.py, docs/DESIGN-DECISIONS.md
section 35): the marker, the partition of a shard's state, forwarding by a split shard, the
two-path dedup rule, and folds resumed from snapshots across a split. A whole fleet folded in
memory: tests/test_split_fleet.py."""

from __future__ import annotations

from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from eventfleet.ledger import split as shard_split
from eventfleet.ledger.codec import encode
from eventfleet.ledger.events import Topup
from eventfleet.ledger.results import ForwardResult, SplitResult, StepResult
from eventfleet.ledger.rules import step, step_entry
from eventfleet.ledger.shards import ShardCounts, user_shard
from eventfleet.ledger.state import ShardState

WINDOW = 10**9


def as_text(text: bytes | str) -> str:
    return text.decode() if isinstance(text, bytes) else text


def counts(users: int, items: int) -> ShardCounts:
    return ShardCounts(users, items, WINDOW)


# --- the marker, the refusals, the partition -------------------------------------------


def test_marker_round_trips_and_nothing_else_parses() -> None:
    assert shard_split.parse_marker(shard_split.marker_text(8, 16)) == (8, 16)
    for raw in (
        b'{"type":"split","users":8}',
        b'{"type":"split","users":8,"items":"8"}',
        b'{"type":"split","users":8,"items":8,"x":1}',
        b'{"type":"topup","users":8,"items":8}',
        b"[1,2]",
        b"not json",
    ):
        assert shard_split.parse_marker(raw) is None


def test_growth_by_a_multiple_only() -> None:
    assert shard_split.growth_error(4, 4, "user") is None
    assert shard_split.growth_error(4, 12, "user") is None
    assert "shrink" in str(shard_split.growth_error(8, 4, "user"))
    assert "multiple of 4" in str(shard_split.growth_error(4, 6, "item"))
    assert "at most 4096" in str(shard_split.growth_error(4, 8192, "item"))
    assert shard_split.children("u1", 4, 16) == ["u1", "u5", "u9", "u13"]


def test_a_marker_that_does_not_grow_is_a_dead_letter_and_changes_nothing() -> None:
    state = ShardState("u0")
    c = counts(4, 4)
    for users, items in ((2, 4), (6, 4), (4, 3)):
        res = step(state, "5-0", shard_split.marker_text(users, items), c, splits=True)
        assert res.kind == "dead" and res.dead is not None
        assert res.dead.reason == "invalid_event"
    assert state.routing is None and not state.splits


def test_a_marker_applies_only_when_the_caller_allows_it_and_never_from_an_inbox() -> None:
    c = counts(2, 2)
    marker = shard_split.marker_text(4, 4)
    res = step(ShardState("u0"), "5-0", marker, c)
    assert res.dead is not None and res.dead.reason == "unknown_type"
    res = step(ShardState("u0"), "5-0", marker, c, from_inbox=True, splits=True)
    assert res.dead is not None and res.dead.reason == "unknown_type"


def test_a_repeated_marker_is_a_duplicate() -> None:
    state = ShardState("u0")
    c = counts(2, 2)
    assert step(state, "5-0", shard_split.marker_text(4, 2), c, splits=True).kind == "split"
    again = step(state, "6-0", shard_split.marker_text(4, 2), c, splits=True)
    assert again.kind == "duplicate"
    assert state.splits == [2, 4] and state.routing == (4, 2)


@settings(max_examples=150, deadline=None)
@given(
    balances=st.dictionaries(st.integers(1, 500), st.integers(0, 10**6), max_size=40),
    orders=st.sets(st.tuples(st.integers(1, 500), st.sampled_from(["o1", "o2"]))),
    sources=st.dictionaries(st.sampled_from(["p:a", "app/p:b", "i0", "i1"]), st.integers(1, 9)),
    keys=st.dictionaries(st.sampled_from(["app/k1", "k2"]), st.integers(0, 9)),
    k=st.sampled_from([2, 3, 4]),
)
def test_partition_puts_every_key_on_its_new_shard_and_copies_the_dedup_history(
    balances: dict[int, int],
    orders: set[tuple[int, str]],
    sources: dict[str, int],
    keys: dict[str, int],
    k: int,
) -> None:
    old = counts(2, 2)
    state = ShardState("u1")
    state.balances = {u: b for u, b in balances.items() if user_shard(u, old) == "u1"}
    state.orders = {f"{u}/{o}": (7, True) for u, o in orders if user_shard(u, old) == "u1"}
    state.watermarks = dict(sources)
    state.seen = {s: 5 for s in sources if s[:1] != "i"}
    state.keys = dict(keys)
    before_bal, before_orders = dict(state.balances), dict(state.orders)
    seeds = shard_split.apply_marker(state, 2 * k, 2, old)
    assert isinstance(seeds, dict)
    new = counts(2 * k, 2)
    everyone = {"u1": state, **seeds}
    assert sorted(everyone) == sorted(shard_split.children("u1", 2, 2 * k))
    merged: dict[int, int] = {}
    for name, s in everyone.items():
        assert all(user_shard(u, new) == name for u in s.balances)
        assert all(user_shard(int(o.split("/")[0]), new) == name for o in s.orders)
        merged.update(s.balances)
    assert merged == before_bal
    assert {o: t for s in everyone.values() for o, t in s.orders.items()} == before_orders
    for name, seed in seeds.items():
        assert seed.routing == (2 * k, 2) and seed.splits == [2 * k]
        assert seed.keys == keys and seed.seen == state.seen
        # producer sources keep their watermark directly; shard sources count afresh
        assert seed.watermarks == {s: m for s, m in sources.items() if s[:1] != "i"}
        assert {s: p["u1"] for s, p in seed.fwd.items()} == sources
        assert seed.last_id == "0-0" and not seed.out_seq
        again = ShardState.from_snapshot(seed.to_snapshot(), name)
        assert again.to_snapshot() == seed.to_snapshot()


def test_an_unsplit_snapshot_is_byte_for_byte_what_it_was() -> None:
    state = ShardState("u0")
    step(state, "1-0", encode(Topup(user_id=1, amount=5), "p:a", 1), counts(2, 2))
    assert b"routing" not in state.to_snapshot() and b"fwd" not in state.to_snapshot()


# --- the two-path dedup rule ------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(
    n=st.integers(1, 30),
    switch=st.integers(0, 30),
    marker_at=st.integers(0, 30),
    order=st.lists(st.booleans(), max_size=120),
    retries=st.lists(st.integers(0, 29), max_size=6),
    scope=st.sampled_from(["", "app"]),
)
def test_a_switching_producer_is_applied_once_whatever_the_interleaving(
    n: int,
    switch: int,
    marker_at: int,
    order: list[bool],
    retries: list[int],
    scope: str,
) -> None:
    """One producer sends n top-ups to one user: the first ``switch`` with the old counts
    (to the parent u1), the rest with the new ones (to the child u3), each maybe retried to
    the shard of its first attempt. The parent's marker lands anywhere among its entries;
    the child's direct entries and the parent's forwards interleave as ``order`` says."""
    old, user = counts(2, 2), 3  # user 3 is u1 under 2 and u3 under 4
    assert user_shard(user, old) == "u1" and user_shard(user, counts(4, 2)) == "u3"
    texts = [encode(Topup(user_id=user, amount=1 << s), "p:a", s + 1) for s in range(n)]
    again = Counter(retries)  # a retry re-sends to the inbox of its first attempt, at once
    stale = [texts[s] for s in range(min(switch, n)) for _ in range(1 + again[s])]
    direct = [texts[s] for s in range(min(switch, n), n) for _ in range(1 + again[s])]
    parent_log: list[str | None] = list(stale)
    parent_log.insert(min(marker_at, len(parent_log)), None)  # None: the marker
    parent, child = ShardState("u1"), None
    forwarded: list[tuple[str, str]] = []
    applied: Counter[int] = Counter()
    t = 1000
    order = order + [True] * (2 * len(parent_log)) + [False] * (2 * len(direct) + 2 * n)

    def note(results: list[StepResult], shard: ShardState) -> None:
        for res in results:
            if res.kind == "applied" and res.wire is not None:
                applied[res.wire.seq] += 1
                assert shard.shard == "u3" or parent.splits == []

    for parent_turn in order:
        t += 1
        if parent_turn and parent_log:
            raw = parent_log.pop(0)
            text = shard_split.marker_text(4, 2) if raw is None else raw
            for res in step_entry(parent, f"{t}-0", text.encode(), old, scope=scope, splits=True):
                if isinstance(res, SplitResult):
                    child = res.seeds["u3"]
                elif isinstance(res, ForwardResult) and res.forward is not None:
                    assert res.forward.dest == "u3" and res.forward.path == "u1"
                    assert res.forward.scope == scope
                    forwarded.append((as_text(res.forward.text), res.forward.path))
                else:
                    note([res], parent)
        elif not parent_turn and child is not None and (forwarded or direct):
            # the child's log: forwards and direct entries in the order they were appended
            if forwarded and (not direct or t % 2):
                text, path = forwarded.pop(0)
                results = step_entry(child, f"{t}-0", text.encode(), old, scope=scope, fwd=path)
            else:
                results = step_entry(child, f"{t}-0", direct.pop(0).encode(), old, scope=scope)
            note(results, child)
    assert not parent_log and not forwarded and not direct
    assert applied == Counter(range(1, n + 1))
    assert child is not None
    assert parent.balances.get(user, 0) == 0
    assert child.balances[user] == (1 << n) - 1


def test_a_shard_source_numbers_each_path_by_itself() -> None:
    """An item shard sends charges to u1 (old counts), then to u3 directly once it routes
    with the new counts: the two are separate counters, and both apply."""
    old = counts(2, 1)
    state = ShardState("u1")
    charge = '{"type":"topup","user_id":3,"amount":1,"source":"i0","seq":%d}'
    # (a topup from a shard source is what the rules accept as a plain credit in this test:
    # the dedup does not look at the type)
    for seq in (1, 2):
        assert step(state, f"{seq}-0", charge % seq, old).kind == "applied"
    res = step(state, "3-0", shard_split.marker_text(4, 1), old, splits=True)
    assert isinstance(res, SplitResult)
    child = res.seeds["u3"]
    assert child.watermarks.get("i0") is None and child.fwd["i0"] == {"u1": 2}
    assert step(child, "4-0", charge % 1, old).kind == "applied"  # i0 -> u3, its seq 1
    fwd = step(state, "5-0", charge % 3, old)  # i0 -> u1 (stale), seq 3: forwarded
    assert isinstance(fwd, ForwardResult) and fwd.forward is not None
    assert step(child, "6-0", as_text(fwd.forward.text), old, fwd="u1").kind == "applied"
    assert step(child, "7-0", as_text(fwd.forward.text), old, fwd="u1").kind == "duplicate"
    assert child.balances[3] == 4


def test_a_line_sent_stale_then_again_directly_applies_once() -> None:
    """A named file re-run after the counts grew: its line 1 reached the parent with the old
    counts (forwarded, applied by the child), then comes again directly: a repeat."""
    old = counts(2, 2)
    parent = ShardState("u1")
    res = step(parent, "1-0", shard_split.marker_text(4, 2), old, splits=True)
    assert isinstance(res, SplitResult)
    child = res.seeds["u3"]
    line = encode(Topup(user_id=3, amount=5), "p:file", 1)
    fwd = step(parent, "2-0", line, old)
    assert isinstance(fwd, ForwardResult) and fwd.forward is not None
    assert step(child, "3-0", as_text(fwd.forward.text), old, fwd="u1").kind == "applied"
    assert step(child, "4-0", line, old).kind == "duplicate"
    assert child.balances[3] == 5


parent_log = st.lists(
    st.tuples(
        st.integers(0, 2),  # which producer
        st.integers(0, 2),  # how far its seq jumps (0: a retry)
        st.sampled_from([1, 3, 5, 7, 9, 11]),  # the user: u1 under 2 shards
        st.sampled_from(["", "", "", "k1", "k2"]),  # an idempotency key
    ),
    min_size=1,
    max_size=40,
)


@settings(max_examples=200, deadline=None)
@given(spec=parent_log, marker_at=st.integers(0, 40), cut=st.integers(0, 41))
def test_a_fold_resumed_from_a_snapshot_splits_and_forwards_as_a_straight_one(
    spec: list[tuple[int, int, int, str]], marker_at: int, cut: int
) -> None:
    """The seeds a replay writes are the bytes the first fold wrote (a child's seed is
    written once, by whichever fold of its parent's log gets there first), and what it
    forwards is the same, wherever the fold resumed from a snapshot."""
    init = counts(2, 2)
    seqs: Counter[int] = Counter()
    log: list[str] = []
    for who, jump, user, key in spec:
        seqs[who] = max(1, seqs[who] + jump)
        log.append(encode(Topup(user_id=user, amount=user), f"p:s{who}", seqs[who], key or None))
    log.insert(min(marker_at, len(log)), shard_split.marker_text(8, 2))

    def fold(state: ShardState, texts: list[str], first: int) -> list[object]:
        out: list[object] = []
        for n, text in enumerate(texts, first):
            res = step(state, f"{1000 + n}-0", text, init, splits=True)
            out.append(res.kind)
            if isinstance(res, ForwardResult):
                out.append(res.forward)
            if isinstance(res, SplitResult):
                out.append({name: seed.to_snapshot() for name, seed in res.seeds.items()})
        return out

    straight = ShardState("u1")
    want = fold(straight, log, 1)
    first = ShardState("u1")
    got = fold(first, log[:cut], 1)
    resumed = ShardState.from_snapshot(first.to_snapshot(), "u1")
    got += fold(resumed, log[cut:], cut + 1)
    assert got == want
    assert resumed.to_snapshot() == straight.to_snapshot()
    assert "split" in want


child_log = st.lists(
    st.tuples(
        st.integers(0, 2),  # which producer
        st.integers(0, 2),  # how far its seq jumps (0: a retry)
        st.sampled_from(["", "", "u1", "u1.u5"]),  # direct, or forwarded along a path
        st.integers(0, 700),  # ms since the previous entry
    ),
    min_size=1,
    max_size=60,
)


@settings(max_examples=200, deadline=None)
@given(spec=child_log, cut=st.integers(0, 60))
def test_forwarded_paths_fold_the_same_resumed_from_a_snapshot(
    spec: list[tuple[int, int, str, int]], cut: int
) -> None:
    """A child's log mixing direct and forwarded entries, with a window short enough that
    sources are forgotten and pruned in between: a fold resumed from a snapshot at any entry
    decides as a straight one, and a forgotten source takes its paths with it."""
    c = ShardCounts(16, 16, 1000)
    seed = ShardState("u13", routing=(16, 16), splits=[16])
    seqs: Counter[tuple[int, str]] = Counter()
    log, now = [], 1_000_000
    for n, (who, jump, path, gap) in enumerate(spec):
        seqs[who, path] = max(1, seqs[who, path] + jump)
        now += gap
        text = encode(Topup(user_id=13, amount=1 + n), f"p:s{who}", seqs[who, path])
        log.append((f"{now}-{n}", text, path))
    straight = ShardState.from_snapshot(seed.to_snapshot(), "u13")
    want = [step(straight, e, t, c, fwd=p).kind for e, t, p in log]
    first = ShardState.from_snapshot(seed.to_snapshot(), "u13")
    got = [step(first, e, t, c, fwd=p).kind for e, t, p in log[:cut]]
    resumed = ShardState.from_snapshot(first.to_snapshot(), "u13")
    got += [step(resumed, e, t, c, fwd=p).kind for e, t, p in log[cut:]]
    assert got == want
    assert resumed.to_snapshot() == straight.to_snapshot()
    assert set(straight.fwd) <= set(straight.seen)
    for source, paths in straight.fwd.items():  # a producer's direct mark is its largest
        assert straight.watermarks.get(source, 0) >= max(paths.values())
