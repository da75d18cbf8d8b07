"""Folding one shard's log for ``verify`` (with ``eventfleet.store.fold``), from its first entry
(with
``--archive``: its archived segments, then the live log) or, when the log was trimmed, from the
oldest snapshot that covers what is gone, recording what the fold saw on the way: emitted events,
outcomes, dead letters, every (source, seq) received, and the snapshot compared at its offset.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable
from typing import Any

import redis

from eventfleet.ledger.codec import Wire, loads_object
from eventfleet.ledger.events import AddItem, Charge, Order, Release, Topup
from eventfleet.ledger.results import ForwardResult, SplitResult
from eventfleet.ledger.rules import FORGED, StepResult
from eventfleet.ledger.shards import ShardCounts
from eventfleet.ledger.state import ShardState, SnapshotError
from eventfleet.ops.archive import Archive
from eventfleet.ops.verify.checks import check_state
from eventfleet.ops.verify.report import Report, ShardFold, is_shard
from eventfleet.store import ids
from eventfleet.store.fold import History
from eventfleet.store.fold import fold as fold_log
from eventfleet.store.keys import (
    BY_FIELD,
    FWD_FIELD,
    HEAD_FIELD,
    INBOX_HEAD,
    TAIL_FIELD,
    VIA_FIELD,
    VIA_INBOX,
    Keys,
)
from eventfleet.store.shardreads import poison_ids

INBOX_CUT = (
    "the inbox's head was not the last element moved before (its chain is broken): events "
    "producers were told were accepted were cut from the inbox before they reached the log"
)


def inbox_cut(r: redis.Redis, keys: Keys, fold: ShardFold, report: Report) -> None:
    """The inbox as it is now continues the chain: its head is the last element moved (a cut
    since the last move shows here; a cut before a later move shows in that move's ``head``).
    Call only while the fleet is idle: a move in between would look like a cut."""
    for by, tail in fold.inbox_tails.items():
        if tail is None:
            continue
        head: Any = r.lindex(keys.inbox(fold.shard, by or None), 0)
        if head is not None and hashlib.sha1(head).hexdigest().encode() != tail:
            where = f"inbox of producer {by}" if by else "inbox"
            report.findings.add("lost", fold.shard, where, f"now: {INBOX_CUT}")


def _start(
    shard: str,
    info: dict[str, Any],
    snaps: list[tuple[str, ShardState]],
    report: Report,
) -> ShardState | None:
    """Where the fold starts: the first entry, or, when the log was trimmed, the oldest of
    ``snaps`` (``(name, state)``, oldest first: the trim base, then the snapshot) that covers
    every removed entry.

    Trimming (XTRIM) removes entries before the first one left; XDEL removes entries up to
    ``max-deleted-entry-id``. A snapshot can stand in for what is gone only when every removed
    entry is at or before it, which we know for sure when its own entry is still in the log.
    """
    added, length = info.get("entries-added"), int(info["length"])
    if added is None:
        report.unchecked.append(f"{shard}: cannot tell whether the log was trimmed (Redis < 7)")
        return ShardState(shard)
    if int(added) == length:
        return ShardState(shard)
    first = info.get("first-entry")
    first_id = ids.text(first[0]) if first else None
    last_id = ids.text(info["last-generated-id"])
    deleted_upto = ids.text(info.get("max-deleted-entry-id") or "0-0")
    for name, snap in snaps:
        if ids.after(deleted_upto, snap.last_id):
            continue
        covered = (
            not ids.after(first_id, snap.last_id)
            if first_id
            else not ids.after(last_id, snap.last_id)
        )
        if covered:
            report.unchecked.append(
                f"{shard}: {int(added) - length} entries trimmed from the log; folded from its "
                f"{name} at {snap.last_id}, the oldest state that covers them: the records "
                "before it and the totals (conservation, one outcome per order) were not checked"
                " (`verify --archive DIR` checks them from the first event)"
            )
            return snap
    have = ", ".join(f"{name} at {snap.last_id}" for name, snap in snaps) or "no snapshot"
    report.findings.add(
        "lost",
        shard,
        "log",
        f"{int(added) - length} entries deleted from the log (first left: {first_id or 'none'})"
        f" and no snapshot or trim base covers them ({have}): what they did is gone; the "
        "shard was not folded",
    )
    return None


def _from_archive(
    shard: str, info: dict[str, Any], archive: Archive, report: Report
) -> History | None:
    """The shard's archived events when, with the live log, they hold every event it ever had."""
    m = archive.manifest(shard, "events")
    why = ""
    if m is None:
        why = "not in the archive"
    elif not m.complete:
        g = m.gaps[0]
        why = f"the archive misses entries deleted before they were archived ({g.after}..{g.upto}]"
    else:
        deleted_upto = ids.text(info.get("max-deleted-entry-id") or "0-0")
        if ids.after(deleted_upto, m.last):
            why = f"entries up to {deleted_upto} left Redis but the archive ends at {m.last}"
    if why:
        report.unchecked.append(f"{shard}: not folded from its first event: {why}")
        return None
    return archive.history(shard)


def fold_shard(
    r: redis.Redis,
    keys: Keys,
    counts: ShardCounts,
    shard: str,
    report: Report,
    on_chunk: Callable[[int], None],
    archive: Archive | None = None,
    *,
    splits: bool = False,
    seed: ShardState | None = None,
    child: bool = False,
) -> ShardFold | None:
    """``splits``: the namespace was grown online (``counts`` are then its counts at
    ``init``): split markers apply, forwarded entries go on their path, and a ``child``
    (a shard created by growth) starts from ``seed``, the one its parent's fold gave."""
    # Read in the order they are written: the trim base is a copy of an earlier snapshot, and
    # the log loses entries only after the base covering them was copied. Read the other way
    # round, a trim in between could pair a newer base with an older snapshot.
    base = _load(r, keys.trim_base(shard), shard, "trim base", report)
    snap = _load(r, keys.snapshot(shard), shard, "snapshot", report)
    info: Any = r.xinfo_stream(keys.events(shard))
    history = _from_archive(shard, info, archive, report) if archive is not None else None
    if history is not None:
        state: ShardState | None = ShardState(shard)
    else:
        snaps = [("snapshot kept at the last trim", base)] if base is not None else []
        if snap is not None:
            snaps.append(("snapshot", snap))
        state = _start(shard, info, snaps, report)
    if state is None:
        return None
    if child and state is not snap and state is not base:  # from its first entry
        state = _seeded(shard, seed, snap, report)
    fold = ShardFold(shard, state, state.last_id, dict(state.out_seq), dict(state.watermarks))
    for source, paths in state.fwd.items():
        fold.base.update({_on_path(source, path): mark for path, mark in paths.items()})
    if snap is not None and snap is not state:
        check_state(snap, shard, "snapshot", report)
    else:
        fold.snapshot = "start" if snap is not None else "none"
    poison = poison_ids(r, keys, shard)
    stream = keys.events(shard)
    until = ids.text(info["last-generated-id"])
    created = hashlib.sha1(INBOX_HEAD).hexdigest().encode()  # init's and `producers add`'s
    from_start = history is None and state.last_id == "0-0"
    if from_start:
        fold.inbox_tails[""] = created

    entry = {"fwd": "", "by": ""}  # the forwarding path and scope of the entry being folded

    def on_fields(eid: str, fields: dict[bytes, bytes]) -> None:
        if splits:
            path, scope = fields.get(FWD_FIELD), fields.get(BY_FIELD)
            entry["fwd"], entry["by"] = (path or b"").decode(), (scope or b"").decode()
        if fields.get(VIA_FIELD) != VIA_INBOX:
            return
        by = fields.get(BY_FIELD, b"").decode()
        tail = fold.inbox_tails.get(by, created if from_start else None)
        head = fields.get(HEAD_FIELD)
        if head is not None and tail is not None and head != tail:
            where = f"inbox of producer {by}" if by else "inbox"
            report.findings.add("lost", shard, where, f"the move at {eid}: {INBOX_CUT}")
        fold.inbox_tails[by] = fields.get(TAIL_FIELD)  # None before moves carried the chain

    def on_step(eid: str, raw: bytes | None, res: StepResult) -> None:
        fold.entries += 1
        _record(fold, res, raw, report, entry["fwd"], entry["by"], eid)

    if history is not None and splits:
        history = _noting(history, entry)

    if snap is not None and snap is not state:
        # the log up to the snapshot's own offset, the snapshot against that, then the rest
        upto = snap.last_id if ids.after(until, snap.last_id) else until
        fold_log(
            r, stream, state, counts, poison, until=upto, on_step=on_step, on_batch=on_chunk,
            history=history, on_fields=on_fields, splits=splits,
        )  # fmt: skip
        if ids.after(snap.last_id, until):
            report.findings.add(
                "mismatch",
                shard,
                "snapshot",
                f"snapshot at {snap.last_id} is ahead of the log (last entry {until})",
            )
        fold.snapshot = _compare_snapshot(snap, state, report)
    fold_log(
        r, stream, state, counts, poison, until=until, on_step=on_step, on_batch=on_chunk,
        history=history, on_fields=on_fields, splits=splits,
    )  # fmt: skip
    _check_entry_count(shard, info, state, report)
    return fold


def _seeded(
    shard: str, seed: ShardState | None, snap: ShardState | None, report: Report
) -> ShardState:
    """Where a shard created by growth starts when its whole log is there: a copy of the seed
    its parent's fold gave (its stored snapshot is then compared with it at its offset). The
    parent's fold may not have reached the split (it started from a snapshot after its marker,
    its log trimmed): then from the stored snapshot, the seed or a later one, unchecked."""
    if seed is not None:
        return ShardState.from_snapshot(seed.to_snapshot(), shard)
    if snap is None:
        report.unchecked.append(
            f"{shard}: no seed: its parent's fold did not reach its split and it has no snapshot"
        )
        return ShardState(shard)
    report.unchecked.append(
        f"{shard}: its parent's fold did not reach the split that seeded it (folded from a "
        f"snapshot after it): folded from its own snapshot at {snap.last_id}, not checked"
    )
    return snap


def _noting(history: History, entry: dict[str, str]) -> History:
    """``history`` noting each archived entry's path and scope in ``entry`` as it is folded
    (``on_fields`` does so for the live log)."""

    def between(after: str, until: str) -> Any:
        for item in history(after, until):
            entry["fwd"], entry["by"] = item[4], item[3]
            yield item

    return between


def _on_path(source: str, path: str) -> str:
    """The name a forwarded source's seqs are counted under: each path numbers on its own."""
    return f"{source}@{path}"


def _check_entry_count(shard: str, info: dict[str, Any], state: ShardState, rep: Report) -> None:
    """Every entry the log ever had was folded by this state's line of folds (the snapshots it
    started from counted theirs): entries removed after a snapshot, and skipped by a takeover,
    leave the count short of the log's ``entries-added``, even once a later snapshot covers the
    gap (a log trimmed before its snapshot, then a takeover forced)."""
    added = info.get("entries-added")
    if added is None or not state.entries_known:
        if added is not None:
            rep.unchecked.append(
                f"{shard}: entries removed before a snapshot: not checked (its snapshot was "
                "written before snapshots counted entries)"
            )
        return
    if int(added) > state.entries:
        rep.findings.add(
            "lost",
            shard,
            "log",
            f"{int(added) - state.entries} entries were removed from the log before any "
            f"snapshot covered them (the log has had {added}, its folds saw {state.entries}): "
            "what they did is gone",
        )


def _load(r: redis.Redis, key: str, shard: str, name: str, report: Report) -> ShardState | None:
    raw: Any = r.get(key)
    if raw is None:
        return None
    try:
        return ShardState.from_snapshot(raw, shard)
    except SnapshotError as exc:
        report.findings.add("mismatch", shard, name, str(exc))
        return None


def _identity(res: StepResult, raw: bytes | None) -> tuple[str, int] | None:
    """(source, seq) of an entry: from the decoded entry, or, for one that did not decode, from
    its JSON envelope when that much is readable and names a producer."""
    if res.dead is not None and res.dead.reason in FORGED:
        return None  # claims a shard's identity it does not have: no part of that flow
    if res.wire is not None:
        return res.wire.source, res.wire.seq
    doc = loads_object(raw)
    source, seq = (doc.get("source"), doc.get("seq")) if doc is not None else (None, None)
    if not isinstance(source, str) or is_shard(source) or not isinstance(seq, int):
        return None  # shards never write what does not decode: only a producer's counts
    return source, seq


def _record(
    fold: ShardFold,
    res: StepResult,
    raw: bytes | None,
    rep: Report,
    path: str,
    scope: str,
    eid: str = "",
) -> None:
    for e in res.emits:
        fold.emits.setdefault(e.dest, []).append(e.text)
    fold.outcomes.extend(res.outcomes)
    if res.dead is not None:
        fold.dead.append(res.dead)
    if isinstance(res, SplitResult):
        fold.seeds.update(res.seeds)
    text = raw.decode("utf-8", "replace") if raw is not None else ""
    if path:
        sender = path.rpartition(".")[2]
        fold.forwarded_in.setdefault(sender, Counter())[path, scope, text] += 1
    ident = _identity(res, raw)
    if ident is None:
        return
    source, seq = ident
    if path:
        source = _on_path(source, path)
    token: str | int = text if is_shard(source) else hash(text)
    seen = fold.received.setdefault(source, {})
    if seq in seen and seen[seq] != token:
        rep.findings.add(
            "mismatch",
            fold.shard,
            "entries",
            f"two different entries carry ({source}, {seq}): {str(seen[seq])[:160]} / {text[:160]}",
        )
    seen.setdefault(seq, token)
    if isinstance(res, ForwardResult) and res.forward is not None:
        f = res.forward  # received here, applied by the child: consumed, never lost
        sent = f.text.decode("utf-8", "replace") if isinstance(f.text, bytes) else f.text
        fold.forwards.setdefault(f.dest, Counter())[f.path, f.scope, sent] += 1
        fold.forward_last[f.dest] = eid  # in log order: the last one stays
        fold.dead_seqs.setdefault(source, set()).add(seq)
        return
    if res.kind == "duplicate":
        fold.duplicates += 1
        if res.by_key:  # its own seq was new: consumed without effect, never lost
            fold.dead_seqs.setdefault(source, set()).add(seq)
        return
    if res.kind == "dead" or res.wire is None:
        fold.dead_seqs.setdefault(source, set()).add(seq)
        return
    applied = fold.applied_seqs.setdefault(source, set())
    if seq in applied:
        rep.findings.add("duplicate", fold.shard, "applied", f"({source}, {seq}) applied twice")
    applied.add(seq)
    _totals_and_invariants(fold, res.wire, rep)


def _totals_and_invariants(fold: ShardFold, ev: Wire, rep: Report) -> None:
    state = fold.state
    if isinstance(ev, Topup):
        fold.topups += ev.amount
    elif isinstance(ev, AddItem):
        fold.added += ev.count
    elif isinstance(ev, Order):
        fold.orders[(ev.user_id, ev.order_id)] += 1
    if isinstance(ev, Topup | Charge):
        if state.balances.get(ev.user_id, 0) < 0:
            rep.findings.add("invariant", fold.shard, "balance", f"user {ev.user_id} went negative")
    elif isinstance(ev, AddItem | Order | Release):
        item = state.items.get(ev.item_id)
        if item is not None and item.remain < 0:
            rep.findings.add("invariant", fold.shard, "remain", f"item {ev.item_id} < 0")


def _pair(routing: Any) -> tuple[int, int] | None:
    return None if routing is None else (int(routing[0]), int(routing[1]))


def _compare_snapshot(snap: ShardState, fold: ShardState, report: Report) -> str:
    """A seed (a grown shard's first snapshot) is compared with the seed its parent's fold
    gave, as any snapshot with the fold at its offset."""
    shard = snap.shard
    where = (
        "seed (snapshot @0-0)"
        if snap.splits and snap.last_id == "0-0"
        else (f"snapshot @{snap.last_id}")
    )
    diffs: list[str] = []
    if snap.applied != fold.applied:
        diffs.append(f"applied: snapshot {snap.applied}, log {fold.applied}")
    pairs: list[tuple[str, dict[Any, Any], dict[Any, Any]]] = [
        ("balances", snap.balances, fold.balances),
        ("items", {k: (v.price, v.remain) for k, v in snap.items.items()},
         {k: (v.price, v.remain) for k, v in fold.items.items()}),
        ("watermarks", snap.watermarks, fold.watermarks),
        ("out_seq", snap.out_seq, fold.out_seq),
        ("seen", snap.seen, fold.seen),
        ("keys", snap.keys, fold.keys),
        ("orders", snap.orders, fold.orders),
        ("split", {"routing": _pair(snap.routing), "splits": snap.splits, "fwd": snap.fwd},
         {"routing": _pair(fold.routing), "splits": fold.splits, "fwd": fold.fwd}),
        ("counters", {"duplicate_orders": snap.duplicate_orders, "prune_at": snap.prune_at},
         {"duplicate_orders": fold.duplicate_orders, "prune_at": fold.prune_at}),
    ]  # fmt: skip
    if snap.entries_known and fold.entries_known:
        pairs.append(("counters", {"entries": snap.entries}, {"entries": fold.entries}))
    for name, have, want in pairs:
        for k in sorted(have.keys() | want.keys(), key=str):
            if have.get(k) != want.get(k):
                diffs.append(f"{name}[{k}]: snapshot {have.get(k)}, log {want.get(k)}")
    for d in diffs:
        report.findings.add("mismatch", shard, where, d)
    return "differs" if diffs else "match"
