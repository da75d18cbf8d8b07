"""The checks of ``verify`` on folded shards: stored records against the fold, emitted events
against their destinations, gap-free sequences, and the invariants over all shards."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

from eventfleet.ledger.codec import decode_outcome
from eventfleet.ledger.events import OrderOutcome
from eventfleet.ledger.rules import DLQ, OUTCOMES
from eventfleet.ledger.shards import family
from eventfleet.ledger.state import ShardState
from eventfleet.ops.verify.report import SHOWN, Report, ShardFold, is_shard
from eventfleet.store import ids
from eventfleet.store.fold import POISON_REASON, SUSPECT_POISON_ERROR


def check_state(st: ShardState, shard: str, where: str, report: Report) -> None:
    for uid, bal in st.balances.items():
        if bal < 0:
            report.findings.add("invariant", shard, "balance", f"{where}: user {uid} has {bal}")
    for iid, it in st.items.items():
        if it.remain < 0:
            report.findings.add(
                "invariant", shard, "remain", f"{where}: item {iid} has {it.remain}"
            )


def _compare_records(
    shard: str,
    what: str,
    expected: dict[int, Any],
    stored: list[tuple[int, Any]],
    floor: int,
    quiescent: bool,
    report: Report,
) -> None:
    """Record by record, by seq: one stored record per expected one, equal to it."""
    by_seq: dict[int, Any] = {}
    for seq, rec in stored:
        if seq <= floor:
            continue
        if seq in by_seq:
            report.findings.add("duplicate", shard, what, f"seq {seq} stored twice: {rec}")
            continue
        by_seq[seq] = rec
        if seq not in expected:
            report.findings.add("duplicate", shard, what, f"seq {seq} not given by the log: {rec}")
        elif expected[seq] != rec:
            report.findings.add(
                "mismatch", shard, what, f"seq {seq}: stored {rec}, log {expected[seq]}"
            )
    if quiescent:
        for seq in sorted(expected.keys() - by_seq.keys()):
            report.findings.add(
                "lost", shard, what, f"seq {seq} missing: log gives {expected[seq]}"
            )


def _outcome_text(o: OrderOutcome) -> str:
    reason = f"/{o.reason}" if o.reason else ""
    return f"{o.order_id} {o.status}{reason} user {o.user_id} amount {o.amount}"


def stored_outcome(fields: Any) -> tuple[int, OrderOutcome] | None:
    """An outcome record's seq and outcome, or None when the record is damaged (a field
    missing, not a number, not an outcome): a writer with the admin's rights can put anything
    there, and verify must report it, not crash on it."""
    try:
        return int(fields[b"seq"]), decode_outcome(fields[b"outcome"])
    except (KeyError, ValueError, TypeError):  # pydantic's ValidationError is a ValueError
        return None


def check_stored(
    fold: ShardFold, stored_outcomes: list[Any], stored_dead: list[Any], report: Report
) -> None:
    shard = fold.shard
    if family(shard) == "u":
        want = {o.seq: _outcome_text(o.outcome) for o in fold.outcomes}
        have = []
        for f in stored_outcomes:
            record = stored_outcome(f)
            if record is None:
                report.findings.add("mismatch", shard, "outcomes", "a damaged outcome record")
                continue
            have.append((record[0], _outcome_text(record[1])))
        _compare_records(shard, "outcomes", want, have, fold.floor.get(OUTCOMES, 0),
                         report.quiescent, report)  # fmt: skip
    want_d = {d.seq: f"{d.entry_id} {d.reason}" for d in fold.dead}
    have_d = [(int(f[b"seq"]), f"{ids.text(f[b'entry_id'])} {ids.text(f[b'reason'])}")
              for f in stored_dead]  # fmt: skip
    _compare_records(shard, "dead letters", want_d, have_d, fold.floor.get(DLQ, 0),
                     report.quiescent, report)  # fmt: skip


def check_poison(
    fold: ShardFold,
    poison: set[str],
    stored_dead: list[Any],
    applied_of: Callable[[set[str]], set[str]],
    report: Report,
) -> None:
    """Poison marks on entries an owner applied. A takeover poisons only a pending entry above
    the written-mark and writes its ``max_deliveries`` letter before acking it, so a mark on
    an entry an owner got past (``applied_of``: at or below the written-mark, or acked)
    without that letter, or with a letter a takeover wrote for such a mark
    (``SUSPECT_POISON_ERROR``), was set by someone else: the set says dead-lettered, the log
    says applied. Only entries the fold met (after its start: older letters may be trimmed)
    are checked."""
    lettered: dict[str, bytes] = {}
    for f in stored_dead:
        if f.get(b"reason") == POISON_REASON.encode():
            lettered[ids.text(f.get(b"entry_id", b""))] = f.get(b"error", b"")
    met = {p for p in poison if ids.after(p, fold.start_id)}
    suspect = {p for p in met if lettered.get(p) == SUSPECT_POISON_ERROR.encode()}
    unlettered = {p for p in met if p not in lettered}
    suspect |= applied_of(unlettered) if unlettered else set()
    for eid in sorted(suspect):
        report.findings.add(
            "lost",
            fold.shard,
            "poison",
            f"entry {eid} is marked poison but an owner had applied it (no takeover poisoned "
            "it): every fold dead-letters it, so what it did is undone (`eventfleet dlq "
            "redrive` applies it again)",
        )


def check_flows(report: Report) -> None:
    """Every event a fold emits sits in its destination stream, and nothing else claims to."""
    folds = report.folds
    for src, fold in folds.items():
        for dest, texts in fold.emits.items():
            floor = fold.floor.get(dest, 0)
            target = folds.get(dest)
            if target is None:
                continue  # destination not checked (trimmed); said in `unchecked`
            got = target.received.get(src, {})
            for i, text in enumerate(texts):
                seq = floor + 1 + i
                if seq not in got:
                    if report.quiescent and seq > target.base.get(src, 0):
                        report.findings.add(
                            "lost", src, f"emitted to {dest}", f"seq {seq} not in {dest}: {text}"
                        )
                elif got[seq] != text:
                    report.findings.add(
                        "mismatch", src, f"emitted to {dest}",
                        f"seq {seq}: {dest} holds {str(got[seq])[:200]}, log gives {text[:200]}",
                    )  # fmt: skip
    for dest, target in folds.items():
        for src, got in target.received.items():
            origin = folds.get(src)
            if origin is None or not is_shard(src):
                continue
            emitted = origin.state.out_seq.get(dest, 0)
            for seq in sorted(s for s in got if s > emitted):
                if report.quiescent:
                    report.findings.add(
                        "duplicate", dest, f"received from {src}",
                        f"({src}, {seq}) is not an event {src}'s log emits: {str(got[seq])[:200]}",
                    )  # fmt: skip


def check_forwards(report: Report) -> None:
    """Every event a split shard's fold forwards to a child is in the child's log once, with
    its path and producer scope; the child's log holds nothing forwarded by that shard that its
    fold does not forward (a forged forward, or one written twice). What a sender folded from a
    snapshot forwarded before it is not recomputed, nor what a child folded from a snapshot
    got before it: only what is missing, or only what is extra, is counted then. Both only
    while the fleet is idle: a parent is folded before its child, which may meanwhile get
    forwards of entries the parent's fold did not reach. A child's forwarded mark past what
    its sender's log forwards is found first (``_forged_marks``): it names the likely cause of
    the forwards lost after it."""
    folds = report.folds
    forged = _forged_marks(report)
    for sender, fold in folds.items():
        for dest in fold.forwards.keys() | {
            d for d, f in folds.items() if sender in f.forwarded_in
        }:
            target = folds.get(dest)
            if target is None:
                continue  # not folded: said in `unchecked`
            want = fold.forwards.get(dest, Counter())
            got = target.forwarded_in.get(sender, Counter())
            why = (
                f" (suppressed: {dest}'s forwarded mark for {sender} was raised past them, see "
                f"'forwarded mark of {sender}')"
                if (dest, sender) in forged
                else ""
            )
            if report.quiescent and target.complete:  # else what came before it is unseen
                for (path, _scope, text), n in sorted((want - got).items()):
                    report.findings.add(
                        "lost", sender, f"forwarded to {dest}",
                        f"{n} x not in {dest}'s log (path {path}): {text[:200]}{why}",
                    )  # fmt: skip
            if not fold.complete or not report.quiescent:  # live: folded before the child
                continue
            for (path, _scope, text), n in sorted((got - want).items()):
                report.findings.add(
                    "duplicate", dest, f"forwarded by {sender}",
                    f"{n} x more in the log than {sender}'s fold forwards (path {path}): "
                    f"{text[:200]}",
                )  # fmt: skip


def _forged_marks(report: Report) -> set[tuple[str, str]]:
    """A child's forwarded mark for a sender (``NS:{child}:forwarded``) is raised only by the
    sender's owner, to the last sender entry whose forwards it appends, so, the fleet idle, it
    stands at the last entry the sender's fold forwards to that child (or before the fold's
    start). One past it suppresses every forward up to it (``forward_once.lua`` appends only
    entries above the mark): a ``mismatch`` naming the likely cause, a leaked worker
    credential (docs/DESIGN-DECISIONS.md, sections 30 and 35). Returns (child, sender) of
    each."""
    forged: set[tuple[str, str]] = set()
    if not report.quiescent:
        return forged
    for dest, marks in report.marks.items():
        for sender, mark in sorted(marks.items()):
            fold = report.folds.get(sender)
            if fold is None:
                continue  # not folded: said in `unchecked`
            last = fold.forward_last.get(dest, "0-0")
            floor = last if ids.after(last, fold.start_id) else fold.start_id
            if not ids.after(mark, floor):
                continue
            forged.add((dest, sender))
            report.findings.add(
                "mismatch", dest, f"forwarded mark of {sender}",
                f"at {mark}, past the last entry of {sender} that forwards here "
                f"({fold.forward_last.get(dest, 'none')}, log read to {fold.state.last_id}): "
                f"{sender}'s owner raises it only to entries it forwards, so something else "
                f"wrote it, most likely a leaked worker credential (the worker user may HSET "
                f"it); every forward of {sender}'s entries up to {mark} is suppressed (the "
                f"'lost' findings of 'forwarded to {dest}' list them). Rotate the worker "
                f"password; setting the mark back to {last} lets later forwards through",
            )  # fmt: skip
    return forged


def check_sequences(report: Report) -> None:
    """Per source, every seq a shard received above its starting watermark was applied or
    dead-lettered. A seq dropped as a duplicate without ever being applied was lost (a higher
    one got in first). Gaps in seq are allowed by the protocol and not counted; the check
    walks the seqs received, so its cost is the log's length, whatever the seqs claim.
    """
    for fold in report.folds.values():
        for source, seqs in fold.received.items():
            applied = fold.applied_seqs.get(source, set())
            dead = fold.dead_seqs.get(source, set())
            base = fold.base.get(source, 0)
            missing = sorted(s for s in seqs if s > base and s not in applied and s not in dead)
            for s in missing[:SHOWN]:
                report.findings.add(
                    "lost",
                    fold.shard,
                    f"from {source}",
                    f"seq {s} never applied (dropped as a duplicate)",
                )
            if len(missing) > SHOWN:
                report.findings.counts["lost"] += len(missing) - SHOWN


def check_totals(report: Report, stored_orders: Counter[tuple[int, str]]) -> None:
    folds = report.folds.values()
    ok_scope = report.quiescent and all(f.complete for f in folds)
    ok_scope = ok_scope and len(report.folds) == len(report.counts.all_shards())
    records = [o for f in folds for o in f.outcomes]
    # each record's model decoded once (OutcomeRecord keeps the text, status and reason)
    decisions = [o.outcome for o in records if o.status != "duplicate"]
    confirmed = [d for d in decisions if d.status == "confirmed"]
    kinds = Counter(o.reason or o.status for o in records)
    t: dict[str, Any] = {
        "entries": sum(f.entries for f in folds),
        "applied": sum(f.state.applied for f in folds),
        "duplicates_dropped": sum(f.duplicates for f in folds),
        "dead_letters": sum(len(f.dead) for f in folds),
        "topups": sum(f.topups for f in folds),
        "balances": sum(sum(f.state.balances.values()) for f in folds),
        "confirmed_amount": sum(o.amount or 0 for o in confirmed),
        "added": sum(f.added for f in folds),
        "remain": sum(it.remain for f in folds for it in f.state.items.values()),
        "confirmed_qty": sum(o.qty for o in confirmed),
        "orders": sum(sum(f.orders.values()) for f in folds),
        "duplicate_orders": len(records) - len(decisions),
        "outcomes": dict(sorted(kinds.items())),
    }
    report.totals = t
    for f in folds:
        check_state(f.state, f.shard, "after the log", report)
    if not ok_scope:
        report.unchecked.append(
            "conservation and one outcome per order: not checked "
            + ("(the fleet was not idle)" if not report.quiescent else "(trimmed shards)")
        )
        return
    if t["topups"] != t["balances"] + t["confirmed_amount"]:
        report.findings.add(
            "invariant", "all", "money",
            f"topups {t['topups']} != balances {t['balances']} + confirmed {t['confirmed_amount']}",
        )  # fmt: skip
    if t["added"] != t["remain"] + t["confirmed_qty"]:
        report.findings.add(
            "invariant", "all", "stock",
            f"added {t['added']} != remain {t['remain']} + confirmed qty {t['confirmed_qty']}",
        )  # fmt: skip
    # an order is a user's order id: two users may use one id (on one user shard or two)
    decided = Counter((d.user_id, d.order_id) for d in decisions)
    for (uid, oid), n in sorted(decided.items()):
        if n > 1:
            report.findings.add(
                "invariant", "all", "one decision per order",
                f"order {oid} of user {uid}: decided {n} times",
            )  # fmt: skip
    orders: Counter[tuple[int, str]] = Counter()
    for f in folds:
        orders.update(f.orders)
    for uid, oid in sorted(orders.keys() | stored_orders.keys()):
        if stored_orders[uid, oid] != orders[uid, oid]:
            report.findings.add(
                "invariant", "all", "one outcome per order",
                f"order {oid} of user {uid}: {stored_orders[uid, oid]} outcome(s) stored for "
                f"{orders[uid, oid]} order(s)",
            )  # fmt: skip
