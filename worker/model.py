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
- ``_upto``: the last entry id folded.

Orders and sources leave the model when the shard's dedup window lets them go (``prune``),
as they leave the state; balances and items stay.
"""

from __future__ import annotations

from eventfleet.ledger.codec import (
    AddItemWire,
    ChargeWire,
    OrderWire,
    RejectWire,
    ReleaseWire,
    TopupWire,
)
from eventfleet.ledger.rules import StepResult
from eventfleet.ledger.shards import ShardCounts, order_key
from eventfleet.ledger.state import ShardState

UPTO = "_upto"
"""The model's field holding the last entry id it folds."""

FULL_CHUNK = 20_000
"""Fields per script call when every value is written (a model that was missing): each call
blocks Redis for its run, so a million users go in many short calls."""


class Changes:
    """What a batch touched, noted result by result (sets of keys, no values yet)."""

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
        self.sources.add(w.source)
        if res.kind != "applied":
            return
        cls = type(w)
        if cls is TopupWire:
            self.users.add(w.user_id)  # type: ignore[union-attr]
        elif cls is AddItemWire or cls is OrderWire or cls is ReleaseWire:
            self.items.add(w.item_id)  # type: ignore[union-attr]
        elif cls is ChargeWire or cls is RejectWire:
            self.users.add(w.user_id)  # type: ignore[union-attr]
            self.orders.add(order_key(w.user_id, w.order_id, counts.orders_per_user))  # type: ignore[union-attr]

    def __bool__(self) -> bool:
        return bool(self.users or self.items or self.orders or self.sources)


def values(state: ShardState, changes: Changes) -> list[str]:
    """Field/value pairs of everything ``changes`` touched, as ``state`` holds it now."""
    out: list[str] = []
    balances, items, orders, marks = state.balances, state.items, state.orders, state.watermarks
    for u in changes.users:
        balance = balances.get(u)
        if balance is not None:  # a user never credited (an order rejected) has none
            out += (f"b:{u}", str(balance))
    for i in changes.items:
        item = items.get(i)
        if item is not None:
            out += (f"i:{i}", f"{item.remain} {item.price}")
    for o in changes.orders:
        decided = orders.get(o)
        if decided is not None:
            out += (f"o:{o}", "confirmed" if decided[1] else "rejected")
    for s in changes.sources:
        seq = marks.get(s)
        if seq is not None:
            out += (f"w:{s}", str(seq))
    return out


def everything(state: ShardState) -> list[str]:
    """Field/value pairs of every value the state holds (a model written from scratch): what
    ``values`` gives when the batch touched everything."""
    changes = Changes()
    changes.users.update(state.balances)
    changes.items.update(state.items)
    changes.orders.update(state.orders)
    changes.sources.update(state.watermarks)
    return values(state, changes)


class Pruned:
    """Orders and sources the batch's prune let go (their model fields go too). Only a batch
    that may prune (its last entry reaches ``state.prune_at``) pays for the comparison."""

    __slots__ = ("orders", "sources")

    def __init__(self, state: ShardState, due: bool) -> None:
        self.orders = set(state.orders) if due else None
        self.sources = set(state.watermarks) if due else None

    def removed(self, state: ShardState) -> list[str]:
        out: list[str] = []
        if self.orders is not None:
            out += (f"o:{o}" for o in self.orders.difference(state.orders))
        if self.sources is not None:
            out += (f"w:{s}" for s in self.sources.difference(state.watermarks))
        return out


def chunks(pairs: list[str], size: int = FULL_CHUNK) -> list[list[str]]:
    """``pairs`` in slices of ``size`` fields (never splitting a field from its value)."""
    step = 2 * size
    return [pairs[i : i + step] for i in range(0, len(pairs), step)] or [[]]


__all__ = ["UPTO", "Changes", "Pruned", "chunks", "everything", "values"]
