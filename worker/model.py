"""The read model: what applications read in O(1) (``eventfleet.Client.balance``, ``item``,
``order_status``), kept by each shard's owner in one hash per shard (``Keys.model``).

As a batch is applied, ``Changes`` notes which users, items, orders and sources it touched;
``values`` then reads their current values from the shard's state, so the model holds what
the fold holds after the batch, written with the batch's effects (``write_model.lua``: fenced
by the lease, never behind the model's own ``_upto``). Fields:

- ``b:<user>``: balance;
- ``i:<item>``: ``<remain> <price>``;
- ``o:<order>``: ``confirmed`` or ``rejected`` (``<order>``:
``eventfleet.ledger.shards.order_key``);
- ``w:<source>``: the highest seq applied from that source (read-your-writes: a receipt
  ``(shard, source, seq)`` is applied once ``w:<source>`` >= seq);
- on a shard born of a split, ``f:<origin>:<source>``: the highest seq of that source that
  reached it forwarded from ``origin``, the shard a stale router sent it to (the first shard
  of its path; its seed holds what ``origin`` applied before the split), so a receipt naming
  ``origin`` is applied here once ``f:<origin>:<source>`` >= seq;
- on a shard that split, ``_routing``: ``<users>,<items>``, the counts it routes with since
  its last marker: a client that read a key's old shard finds the field gone and this, and
  reads the key's new shard (docs/DESIGN-DECISIONS.md section 35);
- ``_upto``: the last entry id folded.

Orders and sources leave the model when the shard's dedup window lets them go (``prune``),
as they leave the state; balances and items stay.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from eventfleet.ledger.codec import (
    AddItemWire,
    ChargeWire,
    OrderWire,
    RejectWire,
    ReleaseWire,
    TopupWire,
    Wire,
)
from eventfleet.ledger.rules import StepResult
from eventfleet.ledger.shards import ShardCounts, order_key
from eventfleet.ledger.state import ShardState

UPTO = "_upto"
"""The model's field holding the last entry id it folds."""
ROUTING = "_routing"
"""The model's field holding the counts a shard routes with once it split."""

FULL_CHUNK = 20_000
"""Fields per script call when every value is written (a model that was missing): each call
blocks Redis for its run, so a million users go in many short calls."""


class Changes:
    """What a batch touched (sets of keys, no values yet): noted result by result (``note``),
    or from the batch's applied events at once (``touched``), which is cheaper per event."""

    __slots__ = ("items", "orders", "sources", "users")

    def __init__(self) -> None:
        self.users: set[int] = set()
        self.items: set[str] = set()
        self.orders: set[str] = set()
        self.sources: set[str] = set()

    def note(self, res: StepResult, counts: ShardCounts) -> None:
        w = res.wire
        if w is None or (res.kind == "duplicate" and not res.by_key):
            return  # a dead letter or a repeat: nothing of the state changed
        if res.kind != "applied":
            self.sources.add(w.source)
            return
        self.touched([w], counts)

    def touched(self, wires: list[Wire], counts: ShardCounts, kind: type | None = None) -> None:
        """Note the applied events ``wires`` (a batch's, in one go: no call per event).
        ``kind``: every one of them is of that class; a batch of top-ups alone, the common
        case, is then noted in two set comprehensions."""
        if kind is TopupWire:
            self.users.update({w.user_id for w in wires})  # type: ignore[union-attr]
            self.sources.update({w.source for w in wires})
            return
        users, items, sources = self.users, self.items, self.sources
        for w in wires:
            sources.add(w.source)
            cls = type(w)
            if cls is TopupWire:
                users.add(w.user_id)  # type: ignore[union-attr]
            elif cls is AddItemWire or cls is OrderWire or cls is ReleaseWire:
                items.add(w.item_id)  # type: ignore[union-attr]
            elif cls is ChargeWire or cls is RejectWire:
                users.add(w.user_id)  # type: ignore[union-attr]
                self.orders.add(order_key(w.user_id, w.order_id, counts.orders_per_user))  # type: ignore[union-attr]

    def __bool__(self) -> bool:
        return bool(self.users or self.items or self.orders or self.sources)


@dataclass(slots=True)
class ModelWrite:
    """What one ``write_model.lua`` call sets: field/value pairs, flat, spelled as the model
    holds them (``fields`` is that spelling), which the script hands to ``HSET`` as they are.
    Sent as arguments packed by hiredis (``store.wire``), a field costs the worker two short
    strings; parsing words out of one text in Lua cost Redis twice as much per field."""

    pairs: list[str] = field(default_factory=list)

    @property
    def count(self) -> int:
        """How many fields it sets."""
        return len(self.pairs) // 2

    def __bool__(self) -> bool:
        return bool(self.pairs)

    def args(self) -> list[str]:
        return self.pairs


def _pairs(names: list[str], values: list[str]) -> list[str]:
    out = names * 2
    out[0::2] = names
    out[1::2] = values
    return out


def values(state: ShardState, changes: Changes) -> ModelWrite:
    """What ``changes`` touched, as ``state`` holds it now."""
    bal = state.balances
    users = [u for u in changes.users if u in bal]  # a user never credited has no balance
    names = list(map("b:{}".format, users))  # map: a fifth cheaper than comprehensions here
    vals = list(map(str, map(bal.__getitem__, users)))
    if changes.items:
        items = state.items
        its = [i for i in changes.items if i in items]
        names += [f"i:{i}" for i in its]
        vals += [f"{items[i].remain} {items[i].price}" for i in its]
    if changes.orders:
        orders = state.orders
        ords = [o for o in changes.orders if o in orders]
        names += [f"o:{o}" for o in ords]
        vals += ["confirmed" if orders[o][1] else "rejected" for o in ords]
    marks = state.watermarks
    srcs = [s for s in changes.sources if s in marks]
    names += [f"w:{s}" for s in srcs]
    vals += [str(marks[s]) for s in srcs]
    if state.routing is not None:  # a shard that split: one test per batch for the others
        _split_fields(state, changes.sources, names, vals)
    return ModelWrite(_pairs(names, vals))


def _split_fields(
    state: ShardState, sources: Iterable[str], names: list[str], vals: list[str]
) -> None:
    """A split shard's ``_routing`` and the forwarded marks of ``sources``."""
    names.append(ROUTING)
    vals.append(routing_text(state))
    fwd = state.fwd
    for s in sources:
        for path, mark in fwd.get(s, {}).items():
            names.append(forwarded_field(path, s))
            vals.append(str(mark))


def routing_text(state: ShardState) -> str:
    assert state.routing is not None
    return f"{state.routing[0]},{state.routing[1]}"


def forwarded_field(path: str, source: str) -> str:
    """The field of the mark of ``source`` forwarded along ``path`` (named by its origin)."""
    return f"f:{path.partition('.')[0]}:{source}"


def _all(state: ShardState) -> Changes:
    changes = Changes()
    changes.users.update(state.balances)
    changes.items.update(state.items)
    changes.orders.update(state.orders)
    changes.sources.update(state.watermarks)
    changes.sources.update(state.fwd)  # a shard source's forwarded marks: no direct one
    return changes


def everything(state: ShardState, size: int = FULL_CHUNK) -> list[ModelWrite]:
    """Every value the state holds (a model written from scratch), in writes of at most
    ``size`` fields each."""
    whole = _all(state)
    parts: list[ModelWrite] = []
    for name in ("users", "items", "orders", "sources"):
        keys = list(getattr(whole, name))
        for i in range(0, len(keys), size):
            part = Changes()
            getattr(part, name).update(keys[i : i + size])
            parts.append(values(state, part))
    return parts or [ModelWrite()]


def fields(state: ShardState) -> dict[str, str]:
    """The model's fields and values for ``state`` (``_upto`` aside), spelled as
    ``write_model.lua`` writes them: what ``verify`` and the tests hold the stored model to."""
    out: dict[str, str] = {}
    for u, b in state.balances.items():
        out[f"b:{u}"] = str(b)
    for i, t in state.items.items():
        out[f"i:{i}"] = f"{t.remain} {t.price}"
    for o, d in state.orders.items():
        out[f"o:{o}"] = "confirmed" if d[1] else "rejected"
    for s, q in state.watermarks.items():
        out[f"w:{s}"] = str(q)
    if state.routing is not None:
        out[ROUTING] = routing_text(state)
        for s, paths in state.fwd.items():
            for path, q in paths.items():
                out[forwarded_field(path, s)] = str(q)
    return out


class Pruned:
    """Orders and sources the batch's prune let go (their model fields go too). Only a batch
    that may prune (its last entry reaches ``state.prune_at``) pays for the comparison."""

    __slots__ = ("forwarded", "orders", "sources")

    def __init__(self, state: ShardState, due: bool, forwarded: bool = False) -> None:
        """``forwarded``: the batch holds forwarded entries."""
        self.orders = set(state.orders) if due else None
        self.sources = set(state.watermarks) if due else None
        self.forwarded = _forwarded_fields(state) if state.fwd and (due or forwarded) else None
        """A split child's ``f:`` fields: a source's paths go with the window at a prune, or
        when a forwarded entry of a source the window forgot is stepped (``split.on_path``),
        so only a batch that may prune or holds forwarded entries compares them."""

    def removed(self, state: ShardState) -> list[str]:
        out: list[str] = []
        if self.orders is not None:
            out += (f"o:{o}" for o in self.orders.difference(state.orders))
        if self.sources is not None:
            out += (f"w:{s}" for s in self.sources.difference(state.watermarks))
        if self.forwarded is not None:
            out += self.forwarded.difference(_forwarded_fields(state))
        return out


def _forwarded_fields(state: ShardState) -> set[str]:
    return {forwarded_field(p, s) for s, paths in state.fwd.items() for p in paths}


__all__ = ["ROUTING", "UPTO", "Changes", "ModelWrite", "Pruned", "everything", "fields", "values"]
