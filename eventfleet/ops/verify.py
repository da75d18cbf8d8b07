"""``eventfleet verify``: recompute every shard from its log and hold Redis to the result.

Each shard stream is folded from its first entry with ``ledger.rules.step``, read-only. The
fold is then compared with what the workers left behind: the shard's snapshot (at the
snapshot's own offset), its outcomes and dead-letter streams (record by record, by seq),
and the internal events it emitted (each must sit in its destination stream, byte for
byte). Last come the invariants of the design: no negative balance or stock, money and
stock conserved, one outcome per order, no (source, seq) applied twice.

A difference is counted in one of four buckets: ``mismatch`` (Redis holds something other
than the log gives), ``lost`` (the log gives something Redis does not hold), ``duplicate``
(Redis holds an effect twice, or one the log does not justify) and ``invariant``.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import redis

from ledger.codec import decode_outcome
from ledger.events import OrderOutcome
from ledger.rules import DLQ, OUTCOMES, DeadLetter, OutcomeRecord, StepResult, dead_letter, step
from ledger.shards import ShardCounts, family
from ledger.state import ShardState, SnapshotError
from store import ids
from store.keys import EVENT_FIELD, Keys
from worker.takeover import poison_ids

CHUNK = 2000
SHOWN = 5
"""Differing records shown per shard and kind of record; all of them are counted."""

KINDS = ("mismatch", "lost", "duplicate", "invariant")


@dataclass(frozen=True)
class Finding:
    kind: str
    shard: str
    what: str
    detail: str


@dataclass
class Findings:
    shown: list[Finding] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)
    per_place: Counter[tuple[str, str]] = field(default_factory=Counter)

    def add(self, kind: str, shard: str, what: str, detail: str) -> None:
        self.counts[kind] += 1
        self.per_place[(shard, what)] += 1
        if self.per_place[(shard, what)] <= SHOWN:
            self.shown.append(Finding(kind, shard, what, detail))


@dataclass
class ShardFold:
    """One shard's log folded, and what the fold saw on the way."""

    shard: str
    state: ShardState
    start_id: str
    """``0-0`` when folded from the first entry, else the snapshot id it started from."""
    floor: dict[str, int]
    """out_seq at the start: emitted records at or below these seqs were not recomputed."""
    base: dict[str, int]
    """Watermarks at the start: entries at or below them were applied before the fold."""
    entries: int = 0
    duplicates: int = 0
    snapshot: str = "none"
    emits: dict[str, list[str]] = field(default_factory=dict)
    outcomes: list[OutcomeRecord] = field(default_factory=list)
    dead: list[DeadLetter] = field(default_factory=list)
    received: dict[str, dict[int, str | int]] = field(default_factory=dict)
    """Per source, per seq: the entry text (internal sources) or its hash (producers)."""
    applied_seqs: dict[str, set[int]] = field(default_factory=dict)
    dead_seqs: dict[str, set[int]] = field(default_factory=dict)
    topups: int = 0
    added: int = 0
    orders: Counter[str] = field(default_factory=Counter)

    @property
    def complete(self) -> bool:
        return self.start_id == "0-0"

    def applied_by(self, source: str) -> int:
        return len(self.applied_seqs.get(source, ()))


@dataclass
class Report:
    counts: ShardCounts
    folds: dict[str, ShardFold] = field(default_factory=dict)
    findings: Findings = field(default_factory=Findings)
    unchecked: list[str] = field(default_factory=list)
    quiescent: bool = True
    totals: dict[str, Any] = field(default_factory=dict)

    def count(self, kind: str) -> int:
        return self.findings.counts[kind]

    @property
    def ok(self) -> bool:
        return not any(self.findings.counts[k] for k in KINDS)

    def as_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "quiescent": self.quiescent,
            "mismatches": self.count("mismatch"),
            "lost": self.count("lost"),
            "duplicates_applied": self.count("duplicate"),
            "invariant_violations": self.count("invariant"),
            "shards": [
                {
                    "shard": f.shard,
                    "from": "first entry" if f.complete else f"snapshot {f.start_id}",
                    "entries": f.entries,
                    "applied": f.state.applied,
                    "duplicates_dropped": f.duplicates,
                    "dead_letters": len(f.dead),
                    "outcomes": len(f.outcomes),
                    "snapshot": f.snapshot,
                }
                for f in self.folds.values()
            ],
            "findings": [vars(f) for f in self.findings.shown],
            "unchecked": self.unchecked,
            "totals": self.totals,
        }


# ---------------------------------------------------------------- reading


def _entries(
    r: redis.Redis, stream: str, after: str, until: str, on_chunk: Callable[[int], None]
) -> Iterator[tuple[str, bytes | None]]:
    lo = "-" if after == "0-0" else f"({after}"
    while True:
        batch: Any = r.xrange(stream, min=lo, max=until, count=CHUNK)
        for eid, fields in batch:
            yield ids.text(eid), fields.get(EVENT_FIELD)
        if len(batch) < CHUNK:
            on_chunk(len(batch))
            return
        on_chunk(len(batch))
        lo = "(" + ids.text(batch[-1][0])


def _stored_records(r: redis.Redis, stream: str) -> list[dict[bytes, bytes]]:
    out: list[dict[bytes, bytes]] = []
    lo = "-"
    while True:
        batch: Any = r.xrange(stream, min=lo, max="+", count=CHUNK)
        out.extend(fields for _eid, fields in batch)
        if len(batch) < CHUNK:
            return out
        lo = "(" + ids.text(batch[-1][0])


def _envelope(raw: bytes | None) -> dict[str, Any] | None:
    if raw is None:
        return None
    try:
        doc = json.loads(raw)
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None


# ---------------------------------------------------------------- folding one shard


def _start(
    shard: str, info: dict[str, Any], snap: ShardState | None, report: Report
) -> ShardState | None:
    """Where the fold starts: the first entry, or the snapshot when the log was trimmed.

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
    if snap is not None and not ids.after(deleted_upto, snap.last_id):
        covered = (
            not ids.after(first_id, snap.last_id)
            if first_id
            else not ids.after(last_id, snap.last_id)
        )
        if covered:
            report.unchecked.append(
                f"{shard}: {int(added) - length} entries deleted from the log; folded from its "
                f"snapshot at {snap.last_id}: that snapshot, the records it covers and the "
                "totals (conservation, one outcome per order) were not checked"
            )
            return snap
    report.unchecked.append(
        f"{shard}: {int(added) - length} entries deleted from the log (first left: "
        f"{first_id or 'none'}) and no snapshot at or after them "
        f"({'snapshot at ' + snap.last_id if snap else 'no snapshot'}): shard not checked"
    )
    return None


def fold_shard(
    r: redis.Redis,
    keys: Keys,
    counts: ShardCounts,
    shard: str,
    report: Report,
    on_chunk: Callable[[int], None],
) -> ShardFold | None:
    raw_snap: Any = r.get(keys.snapshot(shard))
    info: Any = r.xinfo_stream(keys.events(shard))
    snap: ShardState | None = None
    if raw_snap is not None:
        try:
            snap = ShardState.from_snapshot(raw_snap, shard)
        except SnapshotError as exc:
            report.findings.add("mismatch", shard, "snapshot", str(exc))
    state = _start(shard, info, snap, report)
    if state is None:
        return None
    fold = ShardFold(shard, state, state.last_id, dict(state.out_seq), dict(state.watermarks))
    if snap is not None and snap is not state:
        _check_state(snap, shard, "snapshot", report)
    else:
        fold.snapshot = "start" if snap is not None else "none"
    poison = poison_ids(r, keys, shard)
    until = ids.text(info["last-generated-id"])
    pending_snap = snap if snap is not None and snap is not state else None
    for eid, raw in _entries(r, keys.events(shard), state.last_id, until, on_chunk):
        if pending_snap is not None and ids.after(eid, pending_snap.last_id):
            fold.snapshot = _compare_snapshot(pending_snap, state, report)
            pending_snap = None
        fold.entries += 1
        if eid in poison:
            text = raw.decode("utf-8", "replace") if raw is not None else ""
            res = dead_letter(state, eid, text, "max_deliveries", "delivered too often")
        else:
            res = step(state, eid, raw, counts)
        _record(fold, res, _envelope(raw), raw, report)
    if pending_snap is not None:
        if ids.after(pending_snap.last_id, until):
            report.findings.add(
                "mismatch",
                shard,
                "snapshot",
                f"snapshot at {pending_snap.last_id} is ahead of the log (last entry {until})",
            )
        fold.snapshot = _compare_snapshot(pending_snap, state, report)
    return fold


def _record(
    fold: ShardFold, res: StepResult, doc: dict[str, Any] | None, raw: bytes | None, rep: Report
) -> None:
    for e in res.emits:
        fold.emits.setdefault(e.dest, []).append(e.text)
    fold.outcomes.extend(res.outcomes)
    if res.dead is not None:
        fold.dead.append(res.dead)
    if doc is None or not isinstance(doc.get("source"), str) or not isinstance(doc.get("seq"), int):
        return
    source, seq = doc["source"], doc["seq"]
    text = raw.decode("utf-8", "replace") if raw is not None else ""
    token: str | int = text if _is_shard(source) else hash(text)
    seen = fold.received.setdefault(source, {})
    if seq in seen and seen[seq] != token:
        rep.findings.add(
            "mismatch",
            fold.shard,
            "entries",
            f"two different entries carry ({source}, {seq}): {str(seen[seq])[:160]} / {text[:160]}",
        )
    seen.setdefault(seq, token)
    if res.kind == "duplicate":
        fold.duplicates += 1
        return
    if res.kind == "dead":
        fold.dead_seqs.setdefault(source, set()).add(seq)
        return
    applied = fold.applied_seqs.setdefault(source, set())
    if seq in applied:
        rep.findings.add("duplicate", fold.shard, "applied", f"({source}, {seq}) applied twice")
    applied.add(seq)
    state, kind = fold.state, doc.get("type")
    if kind == "topup":
        fold.topups += int(doc["amount"])
    elif kind == "add_item":
        fold.added += int(doc["count"])
    elif kind == "order":
        fold.orders[str(doc["order_id"])] += 1
    if kind in ("topup", "charge"):
        uid = int(doc["user_id"])
        if state.balances.get(uid, 0) < 0:
            rep.findings.add("invariant", fold.shard, "balance", f"user {uid} went negative")
    elif kind in ("add_item", "order", "release"):
        item = state.items.get(str(doc["item_id"]))
        if item is not None and item.remain < 0:
            rep.findings.add("invariant", fold.shard, "remain", f"item {doc['item_id']} < 0")


def _is_shard(source: str) -> bool:
    return source[:1] in ("u", "i") and source[1:].isdigit()


# ---------------------------------------------------------------- snapshots


def _check_state(st: ShardState, shard: str, where: str, report: Report) -> None:
    for uid, bal in st.balances.items():
        if bal < 0:
            report.findings.add("invariant", shard, "balance", f"{where}: user {uid} has {bal}")
    for iid, it in st.items.items():
        if it.remain < 0:
            report.findings.add(
                "invariant", shard, "remain", f"{where}: item {iid} has {it.remain}"
            )


def _compare_snapshot(snap: ShardState, fold: ShardState, report: Report) -> str:
    shard, where = snap.shard, f"snapshot @{snap.last_id}"
    diffs: list[str] = []
    if snap.applied != fold.applied:
        diffs.append(f"applied: snapshot {snap.applied}, log {fold.applied}")
    pairs: list[tuple[str, dict[Any, Any], dict[Any, Any]]] = [
        ("balances", snap.balances, fold.balances),
        ("items", {k: (v.price, v.remain) for k, v in snap.items.items()},
         {k: (v.price, v.remain) for k, v in fold.items.items()}),
        ("watermarks", snap.watermarks, fold.watermarks),
        ("out_seq", snap.out_seq, fold.out_seq),
    ]  # fmt: skip
    for name, have, want in pairs:
        for k in sorted(have.keys() | want.keys(), key=str):
            if have.get(k) != want.get(k):
                diffs.append(f"{name}[{k}]: snapshot {have.get(k)}, log {want.get(k)}")
    for d in diffs:
        report.findings.add("mismatch", shard, where, d)
    return "differs" if diffs else "match"


# ---------------------------------------------------------------- stored records


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


def check_stored(
    fold: ShardFold, stored_outcomes: list[Any], stored_dead: list[Any], report: Report
) -> None:
    shard = fold.shard
    if family(shard) == "u":
        want = {o.seq: _outcome_text(o.outcome) for o in fold.outcomes}
        have = [(int(f[b"seq"]), _outcome_text(decode_outcome(f[b"outcome"])))
                for f in stored_outcomes]  # fmt: skip
        _compare_records(shard, "outcomes", want, have, fold.floor.get(OUTCOMES, 0),
                         report.quiescent, report)  # fmt: skip
    want_d = {d.seq: f"{d.entry_id} {d.reason}" for d in fold.dead}
    have_d = [(int(f[b"seq"]), f"{ids.text(f[b'entry_id'])} {ids.text(f[b'reason'])}")
              for f in stored_dead]  # fmt: skip
    _compare_records(shard, "dead letters", want_d, have_d, fold.floor.get(DLQ, 0),
                     report.quiescent, report)  # fmt: skip


# ---------------------------------------------------------------- across shards


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
            if origin is None or not _is_shard(src):
                continue
            emitted = origin.state.out_seq.get(dest, 0)
            for seq in sorted(s for s in got if s > emitted):
                if report.quiescent:
                    report.findings.add(
                        "duplicate", dest, f"received from {src}",
                        f"({src}, {seq}) is not an event {src}'s log emits: {str(got[seq])[:200]}",
                    )  # fmt: skip


def check_sequences(report: Report) -> None:
    """Per source, the applied seqs of a shard run 1..n with no gap (after the start)."""
    for fold in report.folds.values():
        for source, seqs in fold.received.items():
            applied = fold.applied_seqs.get(source, set()) | fold.dead_seqs.get(source, set())
            base = fold.base.get(source, 0)
            top = max(seqs)
            missing = [s for s in range(base + 1, top + 1) if s not in applied]
            for s in missing[:SHOWN]:
                why = "dropped as a duplicate" if s in seqs else "not in the log"
                report.findings.add(
                    "lost", fold.shard, f"from {source}", f"seq {s} never applied ({why})"
                )
            if len(missing) > SHOWN:
                report.findings.counts["lost"] += len(missing) - SHOWN


def check_totals(report: Report, stored_orders: Counter[str]) -> None:
    folds = report.folds.values()
    ok_scope = report.quiescent and all(f.complete for f in folds)
    ok_scope = ok_scope and len(report.folds) == len(report.counts.all_shards())
    confirmed = [o.outcome for f in folds for o in f.outcomes if o.outcome.status == "confirmed"]
    kinds = Counter(o.outcome.reason or o.outcome.status for f in folds for o in f.outcomes)
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
        "outcomes": dict(sorted(kinds.items())),
    }
    report.totals = t
    for f in folds:
        _check_state(f.state, f.shard, "after the log", report)
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
    orders: Counter[str] = Counter()
    for f in folds:
        orders.update(f.orders)
    for oid in sorted(orders.keys() | stored_orders.keys()):
        if stored_orders[oid] != orders[oid]:
            report.findings.add(
                "invariant", "all", "one outcome per order",
                f"order {oid}: {stored_orders[oid]} outcome(s) stored for {orders[oid]} order(s)",
            )  # fmt: skip


def _last_ids(r: redis.Redis, keys: Keys, counts: ShardCounts) -> list[str]:
    pipe = r.pipeline(transaction=False)
    for s in counts.all_shards():
        pipe.xinfo_stream(keys.events(s))
    return [ids.text(i["last-generated-id"]) for i in pipe.execute()]


def verify(
    r: redis.Redis,
    keys: Keys,
    counts: ShardCounts,
    on_chunk: Callable[[int], None] = lambda n: None,
) -> Report:
    from eventfleet.ops.status import is_idle

    report = Report(counts)
    before = _last_ids(r, keys, counts)
    report.quiescent = is_idle(r, keys, counts)
    stored_orders: Counter[str] = Counter()
    for shard in counts.all_shards():
        stored_out = _stored_records(r, keys.outcomes(shard)) if family(shard) == "u" else []
        stored_dead = _stored_records(r, keys.dlq(shard))
        stored_orders.update(decode_outcome(f[b"outcome"]).order_id for f in stored_out)
        fold = fold_shard(r, keys, counts, shard, report, on_chunk)
        if fold is None:
            continue
        report.folds[shard] = fold
        check_stored(fold, stored_out, stored_dead, report)
    if report.quiescent and (_last_ids(r, keys, counts) != before or not is_idle(r, keys, counts)):
        report.quiescent = False
    if not report.quiescent:
        report.unchecked.append(
            "the fleet was not idle: records still in flight were not counted as lost"
        )
    check_flows(report)
    check_sequences(report)
    check_totals(report, stored_orders)
    return report


def stream_lengths(r: redis.Redis, keys: Keys, counts: ShardCounts) -> int:
    pipe = r.pipeline(transaction=False)
    for s in counts.all_shards():
        pipe.xlen(keys.events(s))
    return sum(int(n) for n in pipe.execute())
