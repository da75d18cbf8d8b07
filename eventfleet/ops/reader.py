"""Reading state without asking any worker: snapshot + read-only fold of the stream tail.

Uses the same ``eventfleet.ledger.rules.step`` as the workers; nothing is written.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis

from eventfleet.ledger.codec import decode_outcome
from eventfleet.ledger.events import OrderOutcome
from eventfleet.ledger.rules import StepResult
from eventfleet.ledger.shards import ShardCounts, user_shard
from eventfleet.ledger.state import ShardState
from eventfleet.ops.reshard_progress import Holders, holders
from eventfleet.store import ids
from eventfleet.store.fold import BATCH, fold, fold_entry
from eventfleet.store.keys import Keys
from eventfleet.store.namespace import init_counts_of
from eventfleet.store.shardreads import poison_ids, restore


@dataclass
class Folded:
    state: ShardState
    tail: int
    from_snapshot: bool
    damaged: str = ""
    """Why the snapshot was not used (it does not decode) and what the state was rebuilt from;
    empty when the snapshot was read. A shard without a provable state raises
    ``eventfleet.store.shardreads.SnapshotUnusable`` instead."""


def fold_stream(
    r: redis.Redis,
    keys: Keys,
    shard: str,
    counts: ShardCounts,
    state: ShardState,
    *,
    until: str = "+",
    on_entry: Callable[[str, StepResult], None] | None = None,
    on_chunk: Callable[[int], None] | None = None,
    splits: bool = False,
) -> int:
    """Fold entries after ``state.last_id`` (up to ``until``) into ``state``; return how many.
    ``splits``: split markers apply and forwarded entries go on their path
    (``eventfleet.store.fold.fold``; ``counts`` are then the namespace's at ``init``)."""
    step_cb = None if on_entry is None else lambda eid, _raw, res: on_entry(eid, res)
    poison = poison_ids(r, keys, shard)
    return fold(
        r,
        keys.events(shard),
        state,
        counts,
        poison,
        until=until,
        on_step=step_cb,
        on_batch=on_chunk,
        splits=splits,
    )


def fold_counts(r: redis.Redis, keys: Keys, counts: ShardCounts) -> tuple[ShardCounts, bool]:
    """The counts a read-only fold starts with, and whether split markers apply: once an
    online reshard recorded the counts at ``init`` (docs/DESIGN-DECISIONS.md, section 35),
    those, with splits; before, ``counts`` as given, without (a never-grown namespace folds
    as it always did)."""
    meta: Any = r.hgetall(keys.meta)
    if b"init_user_shards" not in meta:
        return counts, False
    return init_counts_of(meta, keys), True


def fold_inbox(
    r: redis.Redis,
    keys: Keys,
    shard: str,
    counts: ShardCounts,
    st: ShardState,
    splits: bool = False,
) -> int:
    """Fold what waits in the shard's inbox into ``st`` after its log, in order, as the owner
    will when it moves it (marked as from the inbox); return how many. ``st.last_id`` stays
    the log's. A read tool's view: entries the owner moves meanwhile may be missed, and one a
    split parent will forward (a stale router's, for a key a child took) is not seen in the
    child. ``splits``: as ``fold_stream``."""
    last, n, start = st.last_id, 0, 1
    while True:
        chunk: Any = r.lrange(keys.inbox(shard), start, start + BATCH - 1)
        for entry in chunk:  # split and folded as the owner's move and fold will
            n += fold_entry(st, last, entry, True, counts, False, splits=splits)
        start += len(chunk)
        if len(chunk) < BATCH:
            break
    st.last_id = last
    return n


def current(r: redis.Redis, keys: Keys, shard: str, counts: ShardCounts) -> Folded:
    """The shard's state from its snapshot, the log after it, and the events waiting in its
    inbox (so ``state`` shows a published event before a worker has moved it).

    In a namespace grown online the fold starts with the counts at ``init`` and applies split
    markers (``fold_counts``): a parent's log splits where its worker split it, and a shard
    created by growth folds its log from its seed (its first snapshot, written at its
    parent's marker) or a later snapshot of its own, forwarded entries on their path."""
    counts, splits = fold_counts(r, keys, counts)
    start = restore(r, keys, shard)
    snap = start.state
    state = snap if snap is not None else ShardState(shard)
    tail = fold_stream(r, keys, shard, counts, state, splits=splits)
    tail += fold_inbox(r, keys, shard, counts, state, splits)
    damaged = (
        f"shard {shard}: its snapshot does not decode ({start.error}); read from its "
        f"{start.rebuilt_from} instead"
        if start.error
        else ""
    )
    return Folded(state, tail, snap is not None and not start.error, damaged)


def read_outcomes(r: redis.Redis, keys: Keys, shard: str) -> list[tuple[int, OrderOutcome]]:
    out: list[tuple[int, OrderOutcome]] = []
    start = "-"
    while True:
        batch: Any = r.xrange(keys.outcomes(shard), min=start, max="+", count=BATCH)
        if not batch:
            return out
        for _eid, fields in batch:
            try:
                out.append((int(fields[b"seq"]), decode_outcome(fields[b"outcome"])))
            except (KeyError, ValueError, TypeError):
                continue  # a damaged record: `verify` reports it
        after = ids.after_range(batch[-1][0])
        if after is None:
            return out
        start = after


def outcome_json(o: OrderOutcome) -> dict[str, Any]:
    return {
        "status": o.status,
        "reason": o.reason,
        "user_id": o.user_id,
        "item_id": o.item_id,
        "qty": o.qty,
        "amount": o.amount,
        "duplicates": 0,
    }


def add_outcome(orders: dict[tuple[int, str], dict[str, Any]], o: OrderOutcome) -> None:
    """Fold one outcome record into ``orders``, keyed by (user, order id): an order is a
    user's order id. The first record of an order is its outcome, a later ``duplicate`` record
    counts under it."""
    known = orders.get((o.user_id, o.order_id))
    if known is None:
        orders[o.user_id, o.order_id] = outcome_json(o)
    elif o.status == "duplicate":
        known["duplicates"] += 1


def by_order_id(orders: dict[tuple[int, str], dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """``orders`` keyed by order id, sorted: the outcome of the lowest user id that used it;
    when other users used the id too (each its own order), their outcomes in ``others``."""
    out: dict[str, dict[str, Any]] = {}
    for (_uid, oid), o in sorted(orders.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        if oid in out:
            out[oid].setdefault("others", []).append(o)
        else:
            out[oid] = dict(o)
    return out


def order_outcomes(
    r: redis.Redis, keys: Keys, counts: ShardCounts, order_id: str, user_id: int | None = None
) -> list[dict[str, Any]]:
    """The outcome of every user's order with this id (only ``user_id``'s when given), by user
    id: read from that user's shard, or from every user shard."""
    shards = [user_shard(user_id, counts)] if user_id is not None else counts.all_shards()
    orders: dict[tuple[int, str], dict[str, Any]] = {}
    for shard in shards:
        if shard.startswith("u"):
            for _seq, o in read_outcomes(r, keys, shard):
                if o.order_id == order_id and user_id in (None, o.user_id):
                    add_outcome(orders, o)
    return [orders[k] for k in sorted(orders)]


def state_all(
    r: redis.Redis,
    keys: Keys,
    counts: ShardCounts,
    on_shard: Callable[[int], None] | None = None,
    held: Holders | None = None,
) -> dict[str, Any]:
    """Every balance, item and order outcome. While an online reshard runs, the new shards
    already seeded are read too, and each key is listed from the shard that holds it now
    (``reshard_progress.Holders``): before the counts are published a key that moved is in
    its child, not in the parent the published counts name. ``on_shard(1)`` is called as
    each shard is read (a progress bar's advance over ``held.shards``, which ``holders``
    gives when not passed)."""
    if held is None:
        held = holders(r, keys, counts)
    users: dict[str, Any] = {}
    items: dict[str, Any] = {}
    orders: dict[tuple[int, str], dict[str, Any]] = {}
    damaged: list[str] = []
    for shard in held.shards:
        folded = current(r, keys, shard, counts)
        st = folded.state
        if folded.damaged:
            damaged.append(folded.damaged)
        if on_shard is not None:
            on_shard(1)
        for uid in sorted(st.balances):
            if held.of_user(uid) == shard:
                users[str(uid)] = {"balance": st.balances[uid]}
        for iid in sorted(st.items):
            if held.of_item(iid) == shard:
                items[iid] = {"price": st.items[iid].price, "remain": st.items[iid].remain}
        if shard.startswith("u"):
            for _seq, o in read_outcomes(r, keys, shard):
                add_outcome(orders, o)
    return {
        "users": dict(sorted(users.items(), key=lambda kv: int(kv[0]))),
        "items": dict(sorted(items.items())),
        "orders": by_order_id(orders),
    } | ({"damaged": damaged} if damaged else {})
