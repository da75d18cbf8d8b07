"""The rules: apply one stream entry to a shard's state, deterministically.

``step`` is the whole per-entry recipe of the design: decode and validate, check the entry
belongs here, drop a duplicate by (source, seq) or by idempotency key (within the dedup
window of ``eventfleet.ledger.dedup``, in entry-id time), apply the rule (a user shard decides each
order, a user's order id, once), and stamp what it emits with this shard as source and the
next sequence number per destination. It does no I/O;
the worker writes what it returns, and ``verify`` and ``state`` fold with the same code.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial

from eventfleet.ledger import dedup
from eventfleet.ledger import split as shard_split
from eventfleet.ledger.bundle import decode_bundle, is_bundle, split
from eventfleet.ledger.codec import (
    AddItemWire,
    ChargeWire,
    DecodeError,
    OrderWire,
    RejectWire,
    ReleaseWire,
    TopupWire,
    Wire,
    bounded,
    charge_text,
    decode,
    outcome_text,
    reject_text,
    release_text,
)
from eventfleet.ledger.events import (
    MAX_INT,
    Charge,
    Order,
    OutcomeReason,
    OutcomeStatus,
    Reject,
    RejectReason,
)
from eventfleet.ledger.results import (
    DEAD_LETTER_REASONS,
    DLQ,
    FORGED,
    DeadLetter,
    Emit,
    OutcomeRecord,
    StepResult,
    dead_letter,
)
from eventfleet.ledger.shards import ShardCounts, item_shard, order_key, shard_index
from eventfleet.ledger.state import Item, ShardState

__all__ = [  # the results moved to eventfleet.ledger.results; importers here keep working
    "DEAD_LETTER_REASONS",
    "DLQ",
    "FORGED",
    "OUTCOMES",
    "DeadLetter",
    "Emit",
    "OutcomeRecord",
    "Refused",
    "StepResult",
    "dead_letter",
    "step",
    "step_entry",
]

OUTCOMES = "outcomes"


_KEYED = frozenset({TopupWire, AddItemWire})
"""The entries that may carry an idempotency key. Wire classes are matched by identity
(``type(wire) in``): ``decode`` returns exactly these classes, and ``isinstance`` against a
pydantic model class runs the metaclass' Python-level check, several per entry
(docs/PERFORMANCE.md)."""
_DECIDING = frozenset({ChargeWire, RejectWire})
"""The entries by which a user shard decides an order id."""
_USER_WIRES = frozenset({TopupWire, ChargeWire, RejectWire})
"""Entries that belong on the shard of their ``user_id``; the others on their ``item_id``'s."""
_EXTERNAL_WIRES = frozenset({TopupWire, AddItemWire, OrderWire})
"""What producers may send (``EXTERNAL_TYPES``, as wire classes)."""


def _home(wire: Wire, counts: ShardCounts) -> str:
    """``eventfleet.ledger.shards.destination`` for a decoded entry, without its ``isinstance``
    chain."""
    if type(wire) in _USER_WIRES:
        return _shard_of("u", wire.user_id, counts.users)  # type: ignore[union-attr]
    return _shard_of("i", wire.item_id, counts.items)  # type: ignore[union-attr]


def _shard_of(family: str, key: int | str, count: int) -> str:
    """``user_shard`` / ``item_shard``, remembered per id: a pure function of the id and the
    count, so ids seen before are not hashed again."""
    homes = (_USER_HOMES if family == "u" else _ITEM_HOMES).get(count)
    if homes is not None:
        home = homes.get(key)
        if home is not None:
            return home
    return _remember(family, key, count)


def _remember(family: str, key: int | str, count: int) -> str:
    """Hash ``key`` and remember its shard (the table per count starts afresh when full)."""
    table = _USER_HOMES if family == "u" else _ITEM_HOMES
    homes = table.get(count)
    if homes is None or len(homes) >= _HOMES_MAX:
        homes = table[count] = {}
    home = homes[key] = f"{family}{shard_index(key, count)}"
    return home


_USER_HOMES: dict[int, dict[int | str, str]] = {}
"""User shard name per user count and user id, as ``_shard_of`` computed it."""
_ITEM_HOMES: dict[int, dict[int | str, str]] = {}
"""Item shard name per item count and item id."""
_HOMES_MAX = 200_000


class Refused(Exception):
    """An event the rules cannot apply (the state would leave the representable range).

    Raised before any change to the state; ``step`` dead-letters the entry with ``reason``.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def step(
    state: ShardState,
    entry_id: str,
    raw: bytes | str | None,
    counts: ShardCounts,
    *,
    from_inbox: bool = False,
    scope: str = "",
    fwd: str = "",
    splits: bool = False,
) -> StepResult:
    """Apply one entry of this shard's stream. Never raises, whatever ``raw`` holds.

    ``from_inbox`` says the entry came through the shard's inbox (the worker's move marks it
    so in the log): it is a producer's, so it may only be an external event from a producer
    source. ``scope`` is the producer whose own inbox it came from (the move stamps it): its
    source and idempotency key count as ``<scope>/<source>`` and ``<scope>/<key>``, so no
    other producer can match them (a source written on the wire never holds a ``/``). A step
    applies whole or not at all: when a rule fails midway, what it changed is
    put back before the entry is dead-lettered.

    ``fwd`` is the path of an entry forwarded by a split shard; ``splits`` lets a split marker
    apply (``eventfleet.ledger.split``; otherwise it is an ``unknown_type`` dead letter).
    """
    state.last_id = entry_id
    if raw is None:
        return dead_letter(state, entry_id, "", "bad_entry", "entry has no 'event' field")
    try:
        wire = decode(raw)
    except DecodeError as exc:
        marker = shard_split.parse_marker(raw) if splits and not from_inbox else None
        if marker is not None and exc.reason == "unknown_type":
            return shard_split.split(state, entry_id, raw, marker, counts)
        return dead_letter(state, entry_id, raw, exc.reason, exc.message)
    if scope:
        _scoped(wire, scope)
    if state.routing is not None:
        counts = shard_split.routed(counts, state.routing)
    now = dedup.entry_ms(entry_id)
    if fwd:
        run = partial(_step_wire, state, entry_id, now, wire, raw, counts, from_inbox)
        return shard_split.on_path(state, wire.source, fwd, now, counts, run)
    return _step_wire(state, entry_id, now, wire, raw, counts, from_inbox)


def _scoped(wire: Wire, scope: str) -> None:
    """``wire``'s source and key as its producer's (set on the decoded object: the ledger
    only ever sees the scoped names; the entry's text stays what the producer wrote)."""
    # the models are frozen for callers; the decoder's own fresh object is set directly
    object.__setattr__(wire, "source", f"{scope}/{wire.source}")
    if type(wire) in _KEYED and wire.key is not None:  # type: ignore[union-attr]
        object.__setattr__(wire, "key", f"{scope}/{wire.key}")  # type: ignore[union-attr]


def step_entry(
    state: ShardState,
    entry_id: str,
    raw: bytes | None,
    counts: ShardCounts,
    *,
    from_inbox: bool = False,
    scope: str = "",
    fwd: str = "",
    splits: bool = False,
) -> list[StepResult]:
    """Apply one entry, a single event or a bundle (``eventfleet.ledger.bundle``): one result per
    event,
    each exactly what ``step`` gives for that event's text under the entry's id. Counts the
    entry (``ShardState.entries``; ``step`` alone does not).

    A bundle that decodes whole is validated in one call and its events' texts are cut out
    only when a dead letter needs one; any other is split and stepped event by event.
    """
    state.entries += 1
    if raw is None or not is_bundle(raw):
        return [
            step(
                state,
                entry_id,
                raw,
                counts,
                from_inbox=from_inbox,
                scope=scope,
                fwd=fwd,
                splits=splits,
            )
        ]
    wires = decode_bundle(raw)
    if wires is None:
        return [
            step(state, entry_id, t, counts, from_inbox=from_inbox, scope=scope, fwd=fwd)
            for t in split(raw)
        ]
    if scope:
        for w in wires:
            _scoped(w, scope)
    state.last_id = entry_id
    texts = _Texts(raw)
    now = dedup.entry_ms(entry_id)
    if state.routing is not None:
        counts = shard_split.routed(counts, state.routing)
    if fwd:
        return [
            shard_split.on_path(
                state,
                w.source,
                fwd,
                now,
                counts,
                partial(_step_wire, state, entry_id, now, w, texts, counts, from_inbox, i),
            )
            for i, w in enumerate(wires)
        ]
    return [
        _step_wire(state, entry_id, now, w, texts, counts, from_inbox, i)
        for i, w in enumerate(wires)
    ]


class _Texts:
    """A bundle's event texts, cut out on first use (only dead letters need them)."""

    __slots__ = ("_parts", "_raw")

    def __init__(self, raw: bytes) -> None:
        self._raw = raw
        self._parts: Sequence[bytes] | None = None

    def at(self, i: int) -> bytes:
        if self._parts is None:
            self._parts = split(self._raw)
        return self._parts[i]


def _step_wire(
    state: ShardState,
    entry_id: str,
    now: int,
    wire: Wire,
    raw: bytes | str | _Texts,
    counts: ShardCounts,
    from_inbox: bool,
    index: int = 0,
) -> StepResult:
    """``step`` after decoding; ``raw`` is the event's text, or its bundle's (``index``);
    ``now`` the entry id's time (``dedup.entry_ms``)."""
    cls = type(wire)
    source = wire.source
    if from_inbox:
        if cls not in _EXTERNAL_WIRES:
            msg = f"a {wire.type} arrived through the inbox: only shards emit it"
            return dead_letter(state, entry_id, _text(raw, index), "forged_internal", msg)
        if not source.startswith("p:", source.find("/") + 1):
            msg = f"source {source!r} arrived through the inbox: only that shard may use it"
            return dead_letter(state, entry_id, _text(raw, index), "forged_source", msg)
    if cls in _USER_WIRES:  # _home, inlined: this runs for every event
        homes, hkey = _USER_HOMES.get(counts.users), wire.user_id  # type: ignore[union-attr]
    else:
        homes, hkey = _ITEM_HOMES.get(counts.items), wire.item_id  # type: ignore[union-attr]
    home = homes.get(hkey) if homes is not None else None
    if home is None:
        home = _home(wire, counts)
    if home != state.shard:
        if state.splits:  # a key this shard owned before a split: its child's now
            forwarded = shard_split.forward(state, now, wire, _text(raw, index), counts)
            if forwarded is not None:
                return forwarded
        misrouted = dead_letter(
            state,
            entry_id,
            _text(raw, index),
            "wrong_shard",
            f"{wire.type} belongs to shard {home}",
        )
        misrouted.wire = wire
        return misrouted
    window = counts.window_ms
    if now >= state.prune_at:
        dedup.prune(state, now, window)
    # The watermark of ``eventfleet.ledger.dedup``: a shard source's always holds, a producer's
    # only while the producer was heard within the window.
    producer = source[0] == "p" or "/" in source  # p:... or <producer>/p:... (never empty)
    mark = state.watermarks.get(source, 0)
    if mark and producer and now - state.seen.get(source, now - window - 1) > window:
        mark = 0
    if wire.seq <= mark:
        if producer:
            state.seen[source] = now  # a retrying source is alive
        return StepResult("duplicate", wire.type, wire=wire)
    key = wire.key if cls in _KEYED else None  # type: ignore[union-attr]
    if key is not None and dedup.key_taken(state, key, now, window):
        state.watermarks[source] = wire.seq
        state.seen[source] = now
        return StepResult("duplicate", wire.type, wire=wire, by_key=True)
    # Every rule changes the state only once nothing can fail any more (see ``_apply``): a
    # rule that raises leaves the state as it was, and the entry is dead-lettered.
    try:
        result = _apply(state, wire, counts, now)
    except Refused as exc:
        refused = dead_letter(state, entry_id, _text(raw, index), exc.reason, bounded(str(exc)))
        refused.wire = wire
        return refused
    except Exception as exc:
        msg = bounded(f"{type(exc).__name__}: {exc}")
        failed = dead_letter(state, entry_id, _text(raw, index), "handler_error", msg)
        failed.wire = wire
        return failed
    state.watermarks[source] = wire.seq
    if producer:
        state.seen[source] = now
    if key is not None:
        state.keys[key] = now
    state.applied += 1
    result.wire = wire
    return result


def _text(raw: bytes | str | _Texts, index: int) -> bytes | str:
    return raw.at(index) if isinstance(raw, _Texts) else raw


def _checked(value: int, what: str) -> int:
    """``value`` if a JSON reader can hold it exactly, else ``Refused``."""
    if value > MAX_INT:
        raise Refused(f"{what}_overflow", f"{what} would reach {value} (limit {MAX_INT})")
    return value


def _emit(state: ShardState, dest: str, text: Callable[..., str], *fields: object) -> Emit:
    """An event for ``dest``: the next seq towards it, and ``text(*fields, source, seq)``.
    The seq is taken (``_sent``) by the rule once nothing can fail."""
    seq = state.out_seq.get(dest, 0) + 1
    return Emit(dest, seq, text(*fields, state.shard, seq))


def _sent(state: ShardState, e: Emit) -> None:
    state.out_seq[e.dest] = e.seq


def _outcome(
    state: ShardState,
    ev: Charge | Reject,
    status: OutcomeStatus,
    reason: OutcomeReason | None,
    first: str | None,
) -> OutcomeRecord:
    """The order's outcome record, built from the validated event without a model; its seq
    is taken (``_recorded``) by the rule once nothing can fail."""
    seq = state.out_seq.get(OUTCOMES, 0) + 1
    text = outcome_text(
        ev.order_id, ev.user_id, ev.item_id, ev.qty, ev.amount, status, reason, first, ev.ref
    )
    return OutcomeRecord(seq, text, status, reason)


def _recorded(state: ShardState, rec: OutcomeRecord) -> None:
    state.out_seq[OUTCOMES] = rec.seq


def _apply(state: ShardState, ev: Wire, counts: ShardCounts, now: int) -> StepResult:
    """Apply ``ev``. Each rule first works out everything it emits and records (the texts,
    the seqs it would take), which is where it can fail, and only then changes the state,
    with plain assignments: a rule that raises has changed nothing."""
    res = StepResult("applied", ev.type)
    if type(ev) is TopupWire:  # the most common event first: _checked inlined
        balance = state.balances.get(ev.user_id, 0) + ev.amount
        if balance > MAX_INT:
            raise Refused("balance_overflow", f"balance would reach {balance} (limit {MAX_INT})")
        state.balances[ev.user_id] = balance
        return res
    if type(ev) is ChargeWire or type(ev) is RejectWire:
        order = order_key(ev.user_id, ev.order_id, counts.orders_per_user)
        first = dedup.first_decision(state, order, now, counts.window_ms)
        if first is not None:
            _duplicate_order(state, res, ev, first, counts)
            return res
    if type(ev) is AddItemWire:
        item = state.items.get(ev.item_id)
        if item is None:
            state.items[ev.item_id] = Item(ev.price, ev.count)
        else:
            item.remain = _checked(item.remain + ev.count, "stock")
            item.price = ev.price
    elif type(ev) is OrderWire:
        res.emits = [_order(state, ev, counts, f"{ev.source}/{ev.seq}")]
    elif type(ev) is ChargeWire:
        balance = state.balances.get(ev.user_id, 0)
        # built without validation: every field comes from the validated charge
        paid = balance >= ev.amount
        if paid:
            rec = _outcome(state, ev, "confirmed", None, None)
            state.balances[ev.user_id] = balance - ev.amount
        else:
            rec = _outcome(state, ev, "rejected", "insufficient_funds", None)
            dest = _shard_of("i", ev.item_id, counts.items)
            back = _emit(state, dest, release_text, ev.order_id, ev.item_id, ev.qty)
            _sent(state, back)
            res.emits = [back]
        _recorded(state, rec)
        res.outcomes = [rec]
        state.orders[order] = (now, paid)
    elif type(ev) is ReleaseWire:
        item = state.items.get(ev.item_id)
        if item is None:  # cannot happen for releases we emit: items are never removed
            raise Refused("unknown_item", f"release for unknown item {ev.item_id}")
        item.remain = _checked(item.remain + ev.qty, "stock")
    elif type(ev) is RejectWire:
        rec = _outcome(state, ev, "rejected", ev.reason, None)
        _recorded(state, rec)
        res.outcomes = [rec]
        state.orders[order] = (now, False)
    return res


def _duplicate_order(
    state: ShardState, res: StepResult, ev: Charge | Reject, confirmed: bool, counts: ShardCounts
) -> None:
    """An order (this user's order id) the user shard decided before: the first decision
    stands. A charge's stock goes back to its item (a release); the duplicate gets a
    ``duplicate`` record."""
    first = "confirmed" if confirmed else "rejected"
    back = None
    if type(ev) is ChargeWire:
        dest = item_shard(ev.item_id, counts)
        back = _emit(state, dest, release_text, ev.order_id, ev.item_id, ev.qty)
    rec = _outcome(state, ev, "duplicate", None, first)
    if back is not None:
        _sent(state, back)
        res.emits = [back]
    _recorded(state, rec)
    res.outcomes = [rec]
    state.duplicate_orders += 1


def _order(state: ShardState, ev: Order, counts: ShardCounts, ref: str) -> Emit:
    """Reserve the stock and charge the user, or reject; nothing changes unless it can be paid
    (an amount over ``MAX_INT`` is rejected as ``amount_too_large``, stock untouched)."""
    to_user = _shard_of("u", ev.user_id, counts.users)
    item = state.items.get(ev.item_id)
    if item is None:
        return _reject(state, ev, to_user, "unknown_item", None, ref)
    amount = item.price * ev.qty
    if amount > MAX_INT:
        return _reject(state, ev, to_user, "amount_too_large", None, ref)
    if item.remain < ev.qty:
        return _reject(state, ev, to_user, "out_of_stock", amount, ref)
    fields = (ev.order_id, ev.user_id, ev.item_id, ev.qty, amount, ref)
    charge = _emit(state, to_user, charge_text, *fields)
    item.remain -= ev.qty
    _sent(state, charge)
    return charge


def _reject(
    state: ShardState, ev: Order, dest: str, reason: RejectReason, amount: int | None, ref: str
) -> Emit:
    fields = (ev.order_id, ev.user_id, ev.item_id, ev.qty, reason, amount, ref)
    reject = _emit(state, dest, reject_text, *fields)
    _sent(state, reject)
    return reject
