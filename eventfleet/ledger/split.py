"""Online resharding in the domain: the split marker, the partition of a shard's state into
its children, forwarding what a split shard's children own, and the dedup of forwarded
entries (docs/DESIGN-DECISIONS.md, section 35).

A family's count only grows by an integer multiple, so every key of shard ``s`` under ``N``
lives under ``k*N`` on one of ``s + j*N``: a shard splits into children only it feeds. The
split happens where its marker is in its log, so every fold splits at the same entry.

Forwarded entries carry their path (the shards that forwarded them, first hop first, joined
by ``.``). A child checks a forwarded entry against the watermark of its (source, path) in
``ShardState.fwd``; a direct entry as before, against ``ShardState.watermarks``. For a
producer source (whose first direct seq to a new shard is above all it sent that shard's
ancestors: ``producer/client.py: Stamper.regrow``) the direct watermark is kept at
the largest of every path's, so a direct entry is a duplicate iff its seq is at or below all
of them, at no extra cost. A shard source numbers per destination: its paths are separate
counters, and the direct one is checked alone.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Final

from eventfleet.ledger import dedup
from eventfleet.ledger.codec import ChargeWire, RejectWire, TopupWire, Wire
from eventfleet.ledger.results import (
    Forward,
    ForwardResult,
    SplitResult,
    StepResult,
    dead_letter,
)
from eventfleet.ledger.shards import ShardCounts, parse_shard, shard_index
from eventfleet.ledger.state import ShardState

MARKER_TYPE: Final = "split"
MAX_COUNT: Final = 4096


def marker_text(users: int, items: int) -> str:
    """The split marker's entry text: the counts every shard routes with from it on."""
    return json.dumps({"type": MARKER_TYPE, "users": users, "items": items}, separators=(",", ":"))


def parse_marker(raw: bytes | str) -> tuple[int, int] | None:
    """(users, items) of a split marker's text, or None when it is not exactly one."""
    try:
        doc = json.loads(raw)
    except (ValueError, TypeError):
        return None
    if not isinstance(doc, dict) or set(doc) != {"type", "users", "items"}:
        return None
    users, items = doc["users"], doc["items"]
    if doc["type"] != MARKER_TYPE or type(users) is not int or type(items) is not int:
        return None
    return users, items


def growth_error(old: int, new: int, what: str) -> str | None:
    """Why ``old`` shards of a family cannot become ``new`` (None: they can)."""
    if new < old:
        return f"{what} shards cannot shrink from {old} to {new}"
    if new % old:
        return f"{what} shards can only grow by a multiple of {old}, not to {new}"
    if new > MAX_COUNT:
        return f"at most {MAX_COUNT} {what} shards, not {new}"
    return None


def children(shard: str, old: int, new: int) -> list[str]:
    """The shards ``shard`` splits into when its family grows from ``old`` to ``new`` (itself
    first)."""
    fam, index = parse_shard(shard)
    return [f"{fam}{index + j * old}" for j in range(new // old)]


_ROUTED: dict[tuple[ShardCounts, tuple[int, int]], ShardCounts] = {}


def routed(counts: ShardCounts, routing: tuple[int, int]) -> ShardCounts:
    """The namespace's counts with the shard's own routing counts (remembered per pair)."""
    got = _ROUTED.get((counts, routing))
    if got is None:
        if len(_ROUTED) > 1000:
            _ROUTED.clear()
        got = _ROUTED[counts, routing] = ShardCounts(
            routing[0], routing[1], counts.window_ms, counts.orders_per_user
        )
    return got


def own_count(state: ShardState, counts: ShardCounts) -> int:
    """The count of the shard's own family it routes with now."""
    users, items = state.routing or (counts.users, counts.items)
    return users if state.shard[0] == "u" else items


def forward_target(state: ShardState, key: int | str, counts: ShardCounts) -> str | None:
    """The child to forward an entry for ``key`` to, when this shard owned the key before a
    split it went through (one hop: the first split level at which the key left it); None
    when the key was never this shard's.

    ``counts`` are the namespace's counts at ``init``. Computed from the shard's own count
    history only, so a replay forwards to the same place whatever the namespace holds now.
    """
    fam, index = parse_shard(state.shard)
    history = state.splits or [counts.users if fam == "u" else counts.items]
    if shard_index(key, history[0]) != index:
        return None
    for count in history[1:]:
        home = shard_index(key, count)
        if home != index:
            return f"{fam}{home}"
    return None


def on_path(
    state: ShardState,
    source: str,
    path: str,
    now: int,
    counts: ShardCounts,
    run: Callable[[], StepResult],
) -> StepResult:
    """Step an event forwarded along ``path`` (``run``: the plain step of it) against the
    watermark of that path instead of the direct one: the path's is put in the direct one's
    place for the step, and both are set right after it. So the per-event step is the same
    code for both paths and costs nothing more for what was never forwarded."""
    window = counts.window_ms
    if now >= state.prune_at:  # first, so the step itself forgets nothing under the swap
        dedup.prune(state, now, window)
    producer = _producer(source)
    if producer and now - state.seen.get(source, now - window - 1) > window:
        state.watermarks.pop(source, None)  # forgotten by the window, every path with it
        state.fwd.pop(source, None)
    paths = state.fwd.get(source)
    mark = 0 if paths is None else paths.get(path, 0)
    direct = state.watermarks.pop(source, 0)
    if mark:
        state.watermarks[source] = mark
    state.path = path
    try:
        res = run()
    finally:
        state.path = ""
        taken = state.watermarks.pop(source, 0)
        if taken != mark:
            state.fwd.setdefault(source, {})[path] = taken
        # a producer's direct mark is the largest of its paths' (module docstring)
        kept = max(direct, taken) if producer else direct
        if kept:
            state.watermarks[source] = kept
    return res


def apply_marker(
    state: ShardState, users: int, items: int, counts: ShardCounts
) -> dict[str, ShardState] | str:
    """Split ``state`` at a marker for ``users`` and ``items`` shards (``counts``: the
    namespace's at ``init``): the new children's seeds by name, after taking what they own out
    of ``state``; or why the marker cannot apply. A marker for the counts the shard already
    routes with changes nothing and gives no seeds."""
    old_users, old_items = state.routing or (counts.users, counts.items)
    for old, new, what in ((old_users, users, "user"), (old_items, items, "item")):
        error = growth_error(old, new, what)
        if error is not None:
            return error
    if (users, items) == (old_users, old_items):
        return {}
    old = old_users if state.shard[0] == "u" else old_items
    new = users if state.shard[0] == "u" else items
    state.routing = (users, items)
    if new == old:
        return {}
    state.splits = [*(state.splits or [old]), new]
    return partition(state, old, new, counts.orders_per_user)


def partition(
    state: ShardState, old: int, new: int, orders_per_user: bool
) -> dict[str, ShardState]:
    """Move what the new children own out of ``state`` into their seeds."""
    names = children(state.shard, old, new)
    fam = state.shard[0]
    seeds = {name: _seed(state, name, new) for name in names[1:]}

    def home(key: int | str) -> str:
        return f"{fam}{shard_index(key, new)}"

    for uid in [u for u in state.balances if home(u) != state.shard]:
        seeds[home(uid)].balances[uid] = state.balances.pop(uid)
    for iid in [i for i in state.items if home(i) != state.shard]:
        seeds[home(iid)].items[iid] = state.items.pop(iid)
    if orders_per_user:
        for order in [o for o in state.orders if home(_user_of(o)) != state.shard]:
            seeds[home(_user_of(order))].orders[order] = state.orders.pop(order)
    else:  # an order id decided once per user shard: every child remembers every decision
        for seed in seeds.values():
            seed.orders = dict(state.orders)
    return seeds


def _user_of(order: str) -> int:
    return int(order.partition("/")[0])


def _seed(parent: ShardState, name: str, count: int) -> ShardState:
    """A new child's state before its keys move in: the parent's whole dedup history, every
    watermark also as its forwarding path's (``parent`` for what came directly to the parent,
    ``<path>.<parent>`` for what came to it forwarded), fresh counters and log position."""
    fwd: dict[str, dict[str, int]] = {}
    for source, mark in parent.watermarks.items():
        fwd.setdefault(source, {})[parent.shard] = mark
    for source, paths in parent.fwd.items():
        for path, mark in paths.items():
            fwd.setdefault(source, {})[f"{path}.{parent.shard}"] = mark
    return ShardState(
        shard=name,
        watermarks={s: m for s, m in parent.watermarks.items() if _producer(s)},
        seen=dict(parent.seen),
        keys=dict(parent.keys),
        prune_at=parent.prune_at,
        routing=parent.routing,
        splits=[count],
        fwd=fwd,
    )


def _producer(source: str) -> bool:
    return source[:1] == "p" or "/" in source


def split(
    state: ShardState, entry_id: str, raw: bytes | str, marker: tuple[int, int], c: ShardCounts
) -> StepResult:
    """``step`` of a split marker (``c``: the namespace's counts at ``init``)."""
    before = state.routing
    seeds = apply_marker(state, *marker, c)
    if isinstance(seeds, str):
        return dead_letter(state, entry_id, raw, "invalid_event", seeds)
    if state.routing == before:
        return StepResult("duplicate", MARKER_TYPE)
    return SplitResult("split", MARKER_TYPE, seeds=seeds)


_USER_WIRES = frozenset({TopupWire, ChargeWire, RejectWire})


def forward(
    state: ShardState, now: int, wire: Wire, text: bytes | str, counts: ShardCounts
) -> StepResult | None:
    """``step`` of an entry for a key this shard handed to a child at a split: checked for a
    repeat on the path it came along (the seeds know nothing after the split), then to be
    forwarded; None when the key was never this shard's (``counts``: as the shard routes)."""
    key = wire.user_id if type(wire) in _USER_WIRES else wire.item_id  # type: ignore[union-attr]
    target = forward_target(state, key, counts)
    if target is None:
        return None
    window = counts.window_ms
    if now >= state.prune_at:
        dedup.prune(state, now, window)
    source = wire.source
    producer = _producer(source)
    mark = state.watermarks.get(source, 0)  # the path's, under ``on_path``
    if mark and producer and now - state.seen.get(source, now - window - 1) > window:
        mark = 0
    if producer:
        state.seen[source] = now
    if wire.seq <= mark:
        return StepResult("duplicate", wire.type, wire=wire)
    state.watermarks[source] = wire.seq
    scope = source.partition("/")[0] if "/" in source else ""
    path = f"{state.path}.{state.shard}" if state.path else state.shard
    out = Forward(target, path, text, scope)
    return ForwardResult("forwarded", wire.type, wire=wire, forward=out)
