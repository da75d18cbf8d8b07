"""Applying one shard's entries in memory: the rules step each event, and what the batch
writes (``Effects``) and acks is collected as it goes. No I/O here."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import structlog

from eventfleet.ledger.bundle import events_per_entry
from eventfleet.ledger.rules import DeadLetter, step_entry
from eventfleet.ledger.shards import ShardCounts
from eventfleet.store import ids
from eventfleet.store.keys import flat_entry_event, flat_entry_fwd
from eventfleet.worker.effects import Effects
from eventfleet.worker.forwards import MOVED_KINDS as _MOVED
from eventfleet.worker.forwards import note as note_moved
from eventfleet.worker.forwards import step_splitting
from eventfleet.worker.model import Changes, Pruned, values
from eventfleet.worker.observe import Observer
from eventfleet.worker.owned import Owned

log = structlog.get_logger("eventfleet.worker")


def apply_entries(
    o: Owned,
    entries: list[Any],
    counts: ShardCounts,
    observe: Observer,
    splits: bool = False,
    defer: bool = False,
) -> tuple[Effects, list[bytes], int]:
    """Apply a shard's entries: their effects, the ids to ack and how many events.

    ``splits``: split markers apply and forwarded entries are stepped on their path
    (``eventfleet.ledger.split``; ``counts`` are then the namespace's at ``init``); without it
    a marker is an ``unknown_type`` dead letter, as before. ``defer``: the read-model write
    may wait for a later batch (``eventfleet.worker.modeldefer``) when this batch writes
    nothing else."""
    effects = Effects()
    add = effects.add
    acks: list[bytes] = []
    types: Counter[str] = Counter()
    outcomes: Counter[tuple[str, str]] = Counter()
    dups = events = 0
    oldest: str | None = None
    state = o.state
    # noted straight into the deferred set when there is one (no merge of sets per batch)
    changes = o.pending if o.pending is not None else Changes()
    note = changes.note
    applied: list[Any] = []  # the applied events' wires, noted in one go (Changes.touched)
    keep = applied.append
    due = bool(entries) and ids.millis(entries[-1][0]) >= state.prune_at
    pruned = Pruned(state, due, bool(state.fwd) and any(flat_entry_fwd(f) for _e, f in entries))
    # Entries come in id order, so only a batch that starts at or below the last applied
    # id needs a per-entry check: after a lost reply (resync), or if the group's position
    # ever fell behind a snapshot (a Redis that lost writes).
    check = bool(entries) and not ids.after(entries[0][0], state.last_id)
    splitting = step_splitting if splits else None  # one test per entry while it is off
    for eid_b, flat in entries:
        acks.append(eid_b)
        eid = eid_b.decode()
        if check and not ids.after(eid, state.last_id):
            continue  # applied already; only its ack is missing
        raw, via_inbox, by = flat_entry_event(flat)
        if splitting is None:
            results = step_entry(state, eid, raw, counts, from_inbox=via_inbox, scope=by)
        else:
            results = splitting(state, eid, raw, counts, via_inbox, by, flat)
        events += len(results)
        for res in results:
            if res.kind == "applied":  # most results: a top-up emits and records nothing
                keep(res.wire)  # (counted by type after the loop)
                if oldest is None:
                    oldest = eid
                if res.emits or res.outcomes:
                    add(res)
                    for out in res.outcomes:
                        outcomes[out.status, out.reason or "none"] += 1
                continue
            add(res)  # the result itself is dropped here (see Effects)
            note(res, counts)
            if res.kind == "duplicate":
                dups += 1
            elif res.kind in _MOVED:
                effects.moved = note_moved(effects.moved, res, eid, state)
            for out in res.outcomes:
                outcomes[out.status, out.reason or "none"] += 1
    if entries:
        o.per_entry = events_per_entry(events, len(entries))
        if applied:
            kind = type(applied[0])
            if all(type(w) is kind for w in applied):  # a batch of one kind (top-ups)
                types[applied[0].type] += len(applied)
                changes.touched(applied, counts, kind)
            else:
                types.update(w.type for w in applied)
                changes.touched(applied, counts)
        removed = pruned.removed(state)
        if effects.moved is not None:
            removed += effects.moved.removed
        effects.model_removed = removed
        if defer and changes and not removed and not effects:
            if o.pending is None:
                o.pending_since = time.monotonic()
            o.pending = changes
        else:
            o.pending = None
            effects.model = values(state, changes)
    if types or dups:
        observe.shard_applied(o.name, o.family, types, dups, oldest)
    if outcomes:
        observe.outcomes(outcomes)
    if effects.dead:
        observe.dead_lettered(o.name, effects.dead)
        _log_dead_letters(o, effects.dead)
    return effects, acks, events


def _log_dead_letters(o: Owned, dead: list[DeadLetter]) -> None:
    for d in dead:
        log.warning(
            "dead_letter",
            shard=o.name,
            epoch=o.epoch,
            entry_id=d.entry_id,
            reason=d.reason,
            error=d.error[:300],
        )
