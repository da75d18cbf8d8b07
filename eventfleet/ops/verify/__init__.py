"""``eventfleet verify``: recompute every shard from its log and hold Redis to the result.

Each shard stream is folded from its first entry with ``eventfleet.ledger.rules.step``, read-only.
The
fold is then compared with what the workers left behind: the shard's snapshot (at the
snapshot's own offset), its outcomes and dead-letter streams (record by record, by seq),
and the internal events it emitted (each must sit in its destination stream, byte for
byte). Last come the invariants of the design: no negative balance or stock, money and
stock conserved, one decision and one outcome per order (a user's order id), no (source, seq)
applied twice.

A difference is counted in one of four buckets: ``mismatch`` (Redis holds something other
than the log gives), ``lost`` (the log gives something Redis does not hold), ``duplicate``
(Redis holds an effect twice, or one the log does not justify) and ``invariant``.
"""

from __future__ import annotations

import functools
import hashlib
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

import redis

from eventfleet.ledger.shards import ShardCounts, family, parse_shard
from eventfleet.ledger.state import ShardState
from eventfleet.ops.archive import Archive
from eventfleet.ops.verify.checks import (
    check_flows,
    check_forwards,
    check_poison,
    check_sequences,
    check_state,
    check_stored,
    check_totals,
    stored_outcome,
)
from eventfleet.ops.verify.fold import fold_shard, inbox_cut
from eventfleet.ops.verify.model import check_model
from eventfleet.ops.verify.report import KINDS, SHOWN, Finding, Findings, Report, ShardFold
from eventfleet.store import ids
from eventfleet.store.fold import BATCH
from eventfleet.store.keys import Keys
from eventfleet.store.shardreads import applied_by_an_owner, poison_ids, written_mark

__all__ = [
    "KINDS",
    "SHOWN",
    "Finding",
    "Findings",
    "Report",
    "ShardFold",
    "check_flows",
    "check_forwards",
    "check_poison",
    "check_sequences",
    "check_state",
    "check_stored",
    "check_totals",
    "fold_shard",
    "stream_lengths",
    "verify",
]


def _stored_records(
    r: redis.Redis, stream: str, archived: Iterable[tuple[str, dict[bytes, bytes]]] = ()
) -> list[dict[bytes, bytes]]:
    """A record stream's records: the archived ones, then those in Redis after them."""
    out: list[dict[bytes, bytes]] = []
    lo = "-"
    for eid, fields in archived:
        out.append(fields)
        lo = f"({eid}"
    while True:
        batch: Any = r.xrange(stream, min=lo, max="+", count=BATCH)
        out.extend(fields for _eid, fields in batch)
        if len(batch) < BATCH:
            return out
        after = ids.after_range(batch[-1][0])
        if after is None:
            return out
        lo = after


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
    archive: Archive | None = None,
) -> Report:
    """Check the namespace; with ``archive``, every shard from its first event: its archived
    segments, then what Redis still holds.

    A namespace grown online (docs/DESIGN-DECISIONS.md, section 35) is folded with its counts
    at ``init`` and its split markers applied: shards in index order, so a parent is folded
    before the shards created by its splits, each of which starts from the seed its parent's
    fold gave at the marker (its stored seed is compared with that one); what parents
    forwarded is checked against their children's logs (``check_forwards``)."""
    from eventfleet.ops.reader import fold_counts
    from eventfleet.ops.reshard_progress import run_key, seed_digests
    from eventfleet.ops.status import is_idle

    counts = _with_running_reshard(r, keys, counts)
    report = Report(counts)
    before = _last_ids(r, keys, counts)
    report.quiescent = is_idle(r, keys, counts)
    stored_orders: Counter[tuple[int, str]] = Counter()
    init, splits = fold_counts(r, keys, counts)
    seeds: dict[str, ShardState] = {}
    digests = seed_digests(r.hgetall(run_key(keys))) if splits else {}
    seed_ok: set[str] = set()
    for shard in counts.all_shards():  # index order: a child after the parents it came from
        stored_out = (
            _stored_records(r, keys.outcomes(shard), _archived(archive, shard, "outcomes"))
            if family(shard) == "u"
            else []
        )
        stored_dead = _stored_records(r, keys.dlq(shard), _archived(archive, shard, "dlq"))
        records = (stored_outcome(f) for f in stored_out)
        stored_orders.update(
            (rec[1].user_id, rec[1].order_id) for rec in records if rec is not None
        )
        fam, index = parse_shard(shard)
        child = splits and index >= (init.users if fam == "u" else init.items)
        seed = seeds.pop(shard, None)
        fold = fold_shard(
            r, keys, init, shard, report, on_chunk, archive,
            splits=splits, seed=seed, child=child,
        )  # fmt: skip
        if fold is None:
            continue
        seeds.update(fold.seeds)
        seed_ok |= check_seeds(fold, digests, report)
        if seed is not None and not fold.complete and shard not in seed_ok:
            report.unchecked.append(
                f"{shard}: folded from a snapshot after its seed (its log trimmed), and no "
                "digest of its seed was recorded when it was written (`reshard` records one "
                "as it finds each seed): its seed was not compared with the one its parent's "
                "fold gives"
            )
        report.folds[shard] = fold
        check_stored(fold, stored_out, stored_dead, report)
        written = written_mark(r, keys, shard)
        applied_of = functools.partial(applied_by_an_owner, r, keys, shard, written=written)
        check_poison(fold, poison_ids(r, keys, shard), stored_dead, applied_of, report)
        if report.quiescent:  # the read model is written with the batches: idle, it is whole
            check_model(r, keys, fold, report)
    if report.quiescent and splits:  # idle: each mark stands where its sender's owner left it
        report.marks = _forwarded_marks(r, keys, counts)
    if report.quiescent and (_last_ids(r, keys, counts) != before or not is_idle(r, keys, counts)):
        report.quiescent = False
    if not report.quiescent:
        report.unchecked.append(
            "the fleet was not idle: records still in flight were not counted as lost"
        )
    else:
        for fold in report.folds.values():
            inbox_cut(r, keys, fold, report)
    check_flows(report)
    check_forwards(report)
    check_sequences(report)
    check_totals(report, stored_orders)
    return report


def check_seeds(fold: ShardFold, digests: dict[str, str], report: Report) -> set[str]:
    """Each seed ``fold``'s split markers gave against the digest the command recorded of
    the seed its owner wrote (``reshard_progress.SEED_DIGEST``): a difference is a
    ``mismatch`` of the child (it started from another state than the marker gives). Returns
    the children whose seed was compared, which holds even once their log is trimmed and
    their own fold starts from a later snapshot."""
    compared: set[str] = set()
    for child, seed in fold.seeds.items():
        want = digests.get(child)
        if want is None:
            continue
        compared.add(child)
        got = hashlib.sha1(seed.to_snapshot()).hexdigest()
        if got != want:
            report.findings.add(
                "mismatch", child, "seed (digest recorded when it was written)",
                f"the seed {fold.shard}'s log gives at its marker has SHA-1 {got}, the one "
                f"{fold.shard}'s owner wrote had {want}: {child} started from another state",
            )  # fmt: skip
    return compared


def _forwarded_marks(r: redis.Redis, keys: Keys, counts: ShardCounts) -> dict[str, dict[str, str]]:
    """Every shard's forwarded marks (``NS:{shard}:forwarded``: sender -> entry id)."""
    shards = counts.all_shards()
    pipe = r.pipeline(transaction=False)
    for s in shards:
        pipe.hgetall(keys.forwarded(s))
    out: dict[str, dict[str, str]] = {}
    for s, marks in zip(shards, pipe.execute(), strict=True):
        if marks:
            out[s] = {ids.text(k): ids.text(v) for k, v in marks.items()}
    return out


def _with_running_reshard(r: redis.Redis, keys: Keys, counts: ShardCounts) -> ShardCounts:
    """The shards to fold: ``counts``', and while an online reshard runs, its target's too
    once its new shards exist (its first step makes them; they are seeded as their parents
    split, and served before the counts are published): what a parent's fold moved into its
    children's seeds is then folded, and money and stock still add up across the split."""
    from eventfleet.ops.reshard_progress import recorded

    try:
        rec = recorded(r.hgetall(keys.meta), keys)
    except ValueError:
        return counts  # `status` reports fields that do not parse
    if rec is None or not rec.running or (rec.users, rec.items) == (counts.users, counts.items):
        return counts
    if rec.users < counts.users or rec.items < counts.items:
        return counts
    target = ShardCounts(rec.users, rec.items, counts.window_ms, counts.orders_per_user)
    new = [s for s in target.all_shards() if s not in set(counts.all_shards())]
    if int(r.exists(*(keys.events(s) for s in new))) != len(new):
        return counts  # not made yet: their parents have not split either
    return target


def _archived(
    archive: Archive | None, shard: str, stream: str
) -> Iterable[tuple[str, dict[bytes, bytes]]]:
    return () if archive is None else archive.entries(shard, stream)


def stream_lengths(r: redis.Redis, keys: Keys, counts: ShardCounts) -> int:
    pipe = r.pipeline(transaction=False)
    for s in counts.all_shards():
        pipe.xlen(keys.events(s))
    return sum(int(n) for n in pipe.execute())
