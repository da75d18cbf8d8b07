"""The rules: apply one stream entry to a shard's state, deterministically.

``step`` is the whole per-entry recipe of the design: decode and validate, check the entry
belongs here, drop a duplicate by (source, seq), apply the rule, and stamp what it emits
with this shard as source and the next sequence number per destination. It does no I/O;
the worker writes what it returns, and ``verify`` and ``state`` fold with the same code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from ledger.codec import DecodeError, Wire, decode, encode
from ledger.events import (
    AddItem,
    Charge,
    Event,
    Order,
    OrderOutcome,
    Reject,
    Release,
    Topup,
)
from ledger.shards import ShardCounts, destination, item_shard, user_shard
from ledger.state import Item, ShardState

OUTCOMES = "outcomes"
DLQ = "dlq"


@dataclass(frozen=True, slots=True)
class Emit:
    """An event for another shard's stream, already encoded with source and seq."""

    dest: str
    seq: int
    text: str


@dataclass(frozen=True, slots=True)
class OutcomeRecord:
    seq: int
    outcome: OrderOutcome


@dataclass(frozen=True, slots=True)
class DeadLetter:
    seq: int
    shard: str
    entry_id: str
    reason: str
    error: str
    raw: str


@dataclass(slots=True)
class StepResult:
    kind: Literal["applied", "duplicate", "dead"]
    event_type: str | None = None
    emits: list[Emit] = field(default_factory=list)
    outcomes: list[OutcomeRecord] = field(default_factory=list)
    dead: DeadLetter | None = None
    wire: Wire | None = None
    """The decoded entry, when it decoded (read tools use it instead of parsing again)."""


def step(
    state: ShardState, entry_id: str, raw: bytes | str | None, counts: ShardCounts
) -> StepResult:
    """Apply one entry of this shard's stream. Never raises for bad input."""
    state.last_id = entry_id
    if raw is None:
        return dead_letter(state, entry_id, "", "bad_entry", "entry has no 'event' field")
    try:
        wire = decode(raw)
    except DecodeError as exc:
        return dead_letter(state, entry_id, raw, exc.reason, exc.message)
    home = destination(wire, counts)
    if home != state.shard:
        misrouted = dead_letter(
            state, entry_id, raw, "wrong_shard", f"{wire.type} belongs to shard {home}"
        )
        misrouted.wire = wire
        return misrouted
    if wire.seq <= state.watermarks.get(wire.source, 0):
        return StepResult("duplicate", wire.type, wire=wire)
    try:
        result = _apply(state, wire, counts)
    except Exception as exc:  # a bug in a rule must not stall the shard
        failed = dead_letter(state, entry_id, raw, "handler_error", f"{type(exc).__name__}: {exc}")
        failed.wire = wire
        return failed
    state.watermarks[wire.source] = wire.seq
    state.applied += 1
    result.wire = wire
    return result


def dead_letter(
    state: ShardState, entry_id: str, raw: bytes | str, reason: str, error: str
) -> StepResult:
    state.last_id = entry_id
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    letter = DeadLetter(state.next_seq(DLQ), state.shard, entry_id, reason, error, text)
    return StepResult("dead", None, dead=letter)


def _emit(state: ShardState, event: Event, dest: str) -> Emit:
    seq = state.next_seq(dest)
    return Emit(dest, seq, encode(event, state.shard, seq))


def _outcome(state: ShardState, outcome: OrderOutcome) -> OutcomeRecord:
    return OutcomeRecord(state.next_seq(OUTCOMES), outcome)


def _apply(state: ShardState, ev: Wire, counts: ShardCounts) -> StepResult:
    res = StepResult("applied", ev.type)
    if isinstance(ev, Topup):
        state.balances[ev.user_id] = state.balances.get(ev.user_id, 0) + ev.amount
    elif isinstance(ev, AddItem):
        item = state.items.get(ev.item_id)
        if item is None:
            state.items[ev.item_id] = Item(ev.price, ev.count)
        else:
            item.remain += ev.count
            item.price = ev.price
    elif isinstance(ev, Order):
        res.emits.append(_order(state, ev, counts))
    elif isinstance(ev, Charge):
        balance = state.balances.get(ev.user_id, 0)
        fields = dict(order_id=ev.order_id, user_id=ev.user_id, item_id=ev.item_id, qty=ev.qty)
        if balance >= ev.amount:
            state.balances[ev.user_id] = balance - ev.amount
            confirmed = OrderOutcome(**fields, amount=ev.amount, status="confirmed", reason=None)
            res.outcomes.append(_outcome(state, confirmed))
        else:
            refused = OrderOutcome(
                **fields, amount=ev.amount, status="rejected", reason="insufficient_funds"
            )
            res.outcomes.append(_outcome(state, refused))
            release = Release(order_id=ev.order_id, item_id=ev.item_id, qty=ev.qty)
            res.emits.append(_emit(state, release, item_shard(ev.item_id, counts)))
    elif isinstance(ev, Release):
        item = state.items.get(ev.item_id)
        if item is None:  # cannot happen for releases we emit: items are never removed
            raise LookupError(f"release for unknown item {ev.item_id}")
        item.remain += ev.qty
    elif isinstance(ev, Reject):
        rejected = OrderOutcome(
            order_id=ev.order_id,
            user_id=ev.user_id,
            item_id=ev.item_id,
            qty=ev.qty,
            amount=ev.amount,
            status="rejected",
            reason=ev.reason,
        )
        res.outcomes.append(_outcome(state, rejected))
    return res


def _order(state: ShardState, ev: Order, counts: ShardCounts) -> Emit:
    to_user = user_shard(ev.user_id, counts)
    item = state.items.get(ev.item_id)
    common = dict(order_id=ev.order_id, user_id=ev.user_id, item_id=ev.item_id, qty=ev.qty)
    if item is None:
        return _emit(state, Reject(**common, reason="unknown_item"), to_user)
    amount = item.price * ev.qty
    if item.remain < ev.qty:
        return _emit(state, Reject(**common, reason="out_of_stock", amount=amount), to_user)
    item.remain -= ev.qty
    return _emit(state, Charge(**common, amount=amount), to_user)
