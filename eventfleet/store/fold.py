"""The one read-only fold of a shard's log: XRANGE entries after ``state.last_id`` in batches
and apply each event with ``eventfleet.ledger.rules.step`` (each event of a bundle,
``eventfleet.ledger.bundle``,
on its own), dead-lettering the poison entries instead.

The worker's takeover replay, ``eventfleet state`` and ``eventfleet verify`` all fold here.
``history`` puts entries that are no longer in Redis (``eventfleet archive``'s segments) in
front of the live log: ``verify --archive`` folds a shard from its first event ever.
Nothing is written: each step's result goes to ``on_step`` as soon as it is folded (so the
state it sees is the state right after that entry), and ``on_batch`` is called once a batch is
folded (where the takeover writes the batch's effects and renews its leases).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable
from typing import Any

import redis

from eventfleet.ledger.bundle import split
from eventfleet.ledger.rules import StepResult, dead_letter, step, step_entry
from eventfleet.ledger.shards import ShardCounts
from eventfleet.ledger.state import ShardState
from eventfleet.store import ids
from eventfleet.store.keys import FWD_FIELD, entry_event

BATCH = 2000
"""Entries read per XRANGE."""

POISON_REASON = "max_deliveries"
POISON_ERROR = "delivered more than EVENTFLEET_MAX_DELIVERIES times"
"""The dead letter of a poison entry: one its owners never got past (see worker/takeover.py)."""
SUSPECT_POISON_ERROR = (
    "poison mark on an entry an owner had applied (at or below the written-mark) that no "
    "takeover poisoned: not a poison entry; `eventfleet dlq redrive` applies it again"
)
"""The dead letter of an entry in the poison set that the takeover's rule could not have put
there (``worker/takeover.py: suspect_poison``): the fold still honours the set, so every fold
decides the same, but the letter says so and ``verify`` reports it."""

History = Callable[[str, str], Iterable[tuple[str, bytes | None, bool, str, str]]]
"""``(after, until)`` -> the archived entries with ids in ``(after, until]`` (``until`` may be
``+``), in id order, as ``(entry id, entry text or None, whether it came via an inbox, the
 producer whose own inbox it came from or "", its forwarding path (field ``fwd``) or "")``."""

OnFields = Callable[[str, dict[bytes, bytes]], None]
"""``(entry id, the entry's fields)``, called before the entry is folded (live log only;
``verify`` learns an archived entry's forwarding path from ``History`` instead)."""

OnStep = Callable[[str, bytes | None, StepResult], None]
"""``(entry id, entry text or None, step result)``, called right after the entry is folded."""


def poison_letter(
    state: ShardState, entry_id: str, raw: bytes | None, suspect: bool = False
) -> StepResult:
    """Fold a poison entry: dead-letter it (advancing ``state.last_id``), never apply it."""
    text = raw.decode("utf-8", "replace") if raw is not None else ""
    error = SUSPECT_POISON_ERROR if suspect else POISON_ERROR
    return dead_letter(state, entry_id, text, POISON_REASON, error)


def fold_entry(
    state: ShardState,
    eid: str,
    raw: bytes | None,
    via_inbox: bool,
    counts: ShardCounts,
    poisoned: bool,
    on_step: OnStep | None = None,
    suspect: bool = False,
    *,
    scope: str = "",
    fwd: str = "",
    splits: bool = False,
) -> int:
    """Fold one entry: each event of a bundle (``eventfleet.ledger.bundle``) as an entry of its own
    with
    the entry's id, ``on_step`` called with each event's text; a poison entry dead-lettered
    whole. Returns how many events it held.

    Without ``on_step`` no event's text is needed: ``step_entry`` validates a bundle in one
    call (the same results, see tests/test_bundle.py). ``fwd`` and ``splits``: as
    ``eventfleet.ledger.rules.step`` takes them."""
    if poisoned:
        state.entries += 1
        res = poison_letter(state, eid, raw, suspect)
        if on_step is not None:
            on_step(eid, raw, res)
        return 1
    if on_step is None:
        return len(
            step_entry(
                state, eid, raw, counts, from_inbox=via_inbox, scope=scope, fwd=fwd, splits=splits
            )
        )
    texts = split(raw) if raw is not None else (raw,)
    state.entries += 1  # as step_entry counts it
    for text in texts:
        res = step(
            state, eid, text, counts, from_inbox=via_inbox, scope=scope, fwd=fwd, splits=splits
        )
        on_step(eid, text, res)
    return len(texts)


def fold(
    r: redis.Redis,
    stream: str,
    state: ShardState,
    counts: ShardCounts,
    poison: Collection[str],
    *,
    until: str = "+",
    batch: int = BATCH,
    on_step: OnStep | None = None,
    on_batch: Callable[[int], None] | None = None,
    history: History | None = None,
    suspect: Collection[str] = (),
    on_fields: OnFields | None = None,
    splits: bool = False,
) -> int:
    """Fold the entries of ``stream`` after ``state.last_id``, up to ``until`` included, into
    ``state``; return how many were folded. Entries in ``poison`` are dead-lettered (those also
    in ``suspect`` with ``SUSPECT_POISON_ERROR``).

    With ``history``, its entries in that range come first, then the stream's entries after
    the last of them (the stream may still hold some of the same entries: each is folded once).
    A batch shorter than ``batch`` ends the fold: the range held no more entries when read.
    ``splits``: split markers apply and forwarded entries (field ``fwd``) are stepped on
    their path (``eventfleet.ledger.split``; ``counts`` are then the namespace's at ``init``).
    """
    n = 0
    if history is not None:
        pending = 0
        for eid, raw, via_inbox, by, on_path in history(state.last_id, until):
            fold_entry(
                state, eid, raw, via_inbox, counts, eid in poison, on_step, eid in suspect,
                scope=by, fwd=on_path if splits else "", splits=splits,
            )  # fmt: skip
            n += 1
            pending += 1
            if pending == batch:
                if on_batch is not None:
                    on_batch(pending)
                pending = 0
        if pending and on_batch is not None:
            on_batch(pending)
    start = state.last_id
    while until == "+" or ids.after(until, start):
        lo = ids.after_range(start)
        if lo is None:
            break
        entries: Any = r.xrange(stream, min=lo, max=until, count=batch)
        for eid_b, fields in entries:
            eid = ids.text(eid_b)
            if on_fields is not None:
                on_fields(eid, fields)
            raw, via_inbox, by = entry_event(fields)
            path = fields.get(FWD_FIELD) if splits else None
            fold_entry(
                state, eid, raw, via_inbox, counts, eid in poison, on_step, eid in suspect,
                scope=by, fwd=path.decode() if path else "", splits=splits,
            )  # fmt: skip
        if not entries:
            break
        n += len(entries)
        start = ids.text(entries[-1][0])
        if on_batch is not None:
            on_batch(len(entries))
        if len(entries) < batch:
            break
    return n
