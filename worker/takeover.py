"""Taking over a shard: restore its snapshot, claim what earlier owners left pending, replay
the log from the snapshot up to what the group has delivered, ack, and clean up consumers.

Replay is deterministic and every receiver deduplicates by (source, seq), so re-emitting what
an earlier owner may already have written changes nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis
import structlog

from eventfleet.ledger.rules import StepResult
from eventfleet.ledger.shards import ShardCounts
from eventfleet.ledger.state import ShardState
from eventfleet.store import ids
from eventfleet.store.fold import POISON_REASON, fold
from eventfleet.store.keys import GROUP, Keys
from eventfleet.store.shardreads import (
    Restored,
    SnapshotUnusable,
    applied_by_an_owner,
    covers,
    last_delivered,
    poison_ids,
    poison_lettered,
    removed_after,
    restore,
    written_mark,
)
from eventfleet.worker import metrics
from eventfleet.worker.effects import Effects, queue_effects, queue_model
from eventfleet.worker.forwards import MOVED_KINDS
from eventfleet.worker.forwards import note as note_moved
from eventfleet.worker.model import UPTO, Changes, Pruned, everything, values
from eventfleet.worker.scripts import Scripts

log = structlog.get_logger("eventfleet.takeover")


class LeaseLost(Exception):
    """The shard's lease was lost while taking it over."""


CHUNK = 1000


@dataclass
class TakeoverStats:
    replayed: int = 0
    claimed: int = 0
    deleted_while_pending: int = 0
    poisoned: int = 0
    consumers_removed: int = 0
    snapshot_id: str = "0-0"
    seconds: float = 0.0
    restored: bool = False
    warm: bool = False
    """Started from a warm standby's copy instead of the snapshot (worker/standby.py)."""


def take_over(
    r: redis.Redis,
    keys: Keys,
    scripts: Scripts,
    shard: str,
    consumer: str,
    counts: ShardCounts,
    max_deliveries: int,
    keepalive: Callable[[], None] = lambda: None,
    warm: ShardState | None = None,
    restored: Callable[[ShardState], None] = lambda state: None,
    token: str | None = None,
    splits: bool = False,
) -> tuple[ShardState, TakeoverStats]:
    """``keepalive`` is called between replay chunks: it renews leases and raises
    ``LeaseLost`` when this shard's lease is gone, which abandons the takeover. ``warm``: a
    standby's copy of the shard (every entry it folded was acked by an owner), used instead
    of the snapshot when it is not past the group's last-delivered id. ``restored`` gets the
    snapshot's state when the takeover starts from the snapshot, before anything is replayed
    (retention trims up to it there; never up to a warm copy, which no snapshot covers).
    ``splits``: the replay applies split markers and forwards as the worker does
    (``eventfleet.worker.forwards``: written once, whoever wrote them before)."""
    t0 = time.monotonic()
    stats = TakeoverStats()
    for counter in (metrics.LOG_GAPS, metrics.SUSPECT_POISON, metrics.SNAPSHOTS_QUARANTINED):
        counter.labels(shard=shard)  # at 0 from the first takeover: increase() sees the first 1
    stream = keys.events(shard)
    end = last_delivered(r, keys, shard)
    state: ShardState | None
    # A warm copy serves only while nothing after it was removed: retention trims below the
    # owner's snapshot, which may have moved past the standby's position since its last tail.
    if (
        warm is not None
        and not ids.after(warm.last_id, end)
        and not removed_after(r, keys, shard, warm.last_id)
    ):
        state, stats.warm = warm, True
    else:
        try:
            start = restore(r, keys, shard)
        except SnapshotUnusable as exc:
            raw: Any = r.get(keys.snapshot(shard))
            quarantine(r, keys, shard, Restored(None, exc.error, "", raw))
            raise
        state = start.state
        if start.error:
            quarantine(r, keys, shard, start)
        elif state is not None:
            restored(state)
        info: Any = r.xinfo_stream(stream)
        if not covers(info, state.last_id if state is not None else "0-0"):
            # retention trims only what a snapshot covers, never past the latest: a log that
            # starts after it lost entries no state holds (a leaked worker credential's XTRIM)
            metrics.LOG_GAPS.labels(shard=shard).inc()
            log.error(
                "log_entries_missing",
                shard=shard,
                after=state.last_id if state is not None else "0-0",
                error="entries after the snapshot were removed from the log: what they did is "
                "lost (eventfleet verify reports it)",
            )
    stats.restored = state is not None
    if state is None:
        state = ShardState(shard)
    stats.snapshot_id = state.last_id

    # An entry delivered too often (each takeover claims it once more) is poison: it is
    # dead-lettered instead of applied, and remembered so every later fold skips it. Only the
    # oldest pending entry above the written-mark qualifies: no owner ever got as far as
    # writing its effects, so skipping it cannot leave an effect in Redis that the state lacks
    # (nor hand its emitted seq numbers to other events), and an owner that died in a batch
    # died at or after it. Its batch neighbours are not poisoned with it: the replay below
    # walks the re-delivered entries one at a time, raising the mark past each, so the next
    # takeover finds the one that kills its owners at the bottom.
    poison = poison_ids(r, keys, shard)
    written = written_mark(r, keys, shard)
    floor = written if ids.after(written, state.last_id) else state.last_id
    suspect = suspect_poison(r, keys, shard, poison, state.last_id, written)
    pend: Any = r.xpending_range(stream, GROUP, min="-", max="+", count=100_000)
    above = [p for p in pend if ids.after(ids.text(p["message_id"]), floor)]
    above = [p for p in above if ids.text(p["message_id"]) not in poison]
    redelivered = [ids.text(p["message_id"]) for p in above if p["times_delivered"] > 1]
    if above and above[0]["times_delivered"] + 1 > max_deliveries:
        eid = ids.text(above[0]["message_id"])
        r.sadd(keys.poison(shard), eid)
        poison.add(eid)
        stats.poisoned = 1
        # counted once, when first found: later takeovers skip it again without counting
        metrics.DEAD_LETTERS.labels(shard=shard, reason=POISON_REASON).inc()
        log.warning(
            "dead_letter",
            shard=shard,
            entry_id=eid,
            reason=POISON_REASON,
            error=f"delivered more than {max_deliveries} times",
        )

    claimed: list[bytes] = []
    cursor: bytes | str = "0-0"
    while True:
        reply: Any = r.xautoclaim(
            stream, GROUP, consumer, min_idle_time=0, start_id=cursor, count=CHUNK
        )
        cursor = reply[0]
        claimed.extend(eid for eid, _fields in reply[1])
        if len(reply) > 2:
            stats.deleted_while_pending += len(reply[2])
        if cursor in (b"0-0", "0-0"):
            break
    stats.claimed = len(claimed)

    # Replay (snapshot id, last delivered id], writing each batch's effects before the next
    effects = Effects()
    changes = Changes()
    pruned = Pruned(state, ids.millis(end) >= state.prune_at, forwarded=True)
    moved_fields: list[str] = []  # the read model's fields of keys handed to children

    def on_step(eid: str, _raw: bytes | None, res: StepResult) -> None:
        effects.add(res)
        changes.note(res, counts)
        if res.kind in MOVED_KINDS:
            effects.moved = note_moved(effects.moved, res, eid, state)
            moved_fields.extend(effects.moved.removed)
            effects.moved.removed.clear()

    def on_batch(n: int, *, mark: bool = False) -> None:
        nonlocal effects
        pipe = r.pipeline(transaction=False)
        queue_effects(pipe, keys, scripts, shard, effects, state.last_id, mark=mark)
        pipe.execute()
        effects = Effects()
        stats.replayed += n
        keepalive()

    if redelivered:  # up to the floor as usual, then the suspects one by one
        fold(
            r, stream, state, counts, poison, until=floor, on_step=on_step, on_batch=on_batch,
            suspect=suspect, splits=splits,
        )  # fmt: skip
        fold(
            r,
            stream,
            state,
            counts,
            poison,
            until=redelivered[-1],
            batch=1,
            on_step=on_step,
            on_batch=lambda n: on_batch(n, mark=True),
            suspect=suspect,
            splits=splits,
        )
    fold(
        r, stream, state, counts, poison, until=end, on_step=on_step, on_batch=on_batch,
        suspect=suspect, splits=splits,
    )  # fmt: skip
    if ids.after(end, state.last_id):
        # entries up to `end` were deleted from the stream (XDEL or trimming): skip past them
        state.last_id = end
    if token is not None:  # the read model, before the replayed entries are acked
        sync_model(
            r, keys, scripts, shard, token, state, changes, pruned, stats.snapshot_id, moved_fields
        )

    for i in range(0, len(claimed), CHUNK):
        r.xack(stream, GROUP, *claimed[i : i + CHUNK])
    consumers: Any = r.xinfo_consumers(stream, GROUP)
    for c in consumers:
        name = ids.text(c["name"])
        if name != consumer and int(c["pending"]) == 0:
            r.xgroup_delconsumer(stream, GROUP, name)
            stats.consumers_removed += 1

    stats.seconds = time.monotonic() - t0
    metrics.REPLAYED.labels(shard=shard).inc(stats.replayed)
    metrics.CLAIMED.labels(shard=shard).inc(stats.claimed)
    metrics.RECOVERY.observe(stats.seconds)
    return state, stats


def sync_model(
    r: redis.Redis,
    keys: Keys,
    scripts: Scripts,
    shard: str,
    token: str,
    state: ShardState,
    changes: Changes,
    pruned: Pruned,
    restored_at: str,
    moved: list[str] | None = None,
) -> None:
    """Bring the shard's read model to ``state``: what the replay changed, or every value when
    the model lacks what came before the state the takeover restored (a model that is new,
    was lost, or fell behind its snapshot): one HGET to tell, then fenced writes. ``moved``:
    fields of keys the replay handed to children at a split, removed."""
    cur: Any = r.hget(keys.model(shard), UPTO)
    whole = cur is None or ids.after(restored_at, ids.text(cur))
    writes = everything(state) if whole else [values(state, changes)]
    removed = pruned.removed(state) + (moved or [])
    if not any(writes) and not removed:
        return
    pipe = r.pipeline(transaction=False)
    queue_model(pipe, keys, scripts, shard, token, state.last_id, writes, removed)
    pipe.execute()


def suspect_poison(
    r: redis.Redis, keys: Keys, shard: str, poison: set[str], after: str, written: str
) -> set[str]:
    """Poison marks this replay will meet that no takeover could have set: on entries an owner
    got past (``eventfleet.store.shardreads.applied_by_an_owner``: at or below the written-mark, or
    acked) whose ``max_deliveries`` dead letter was never written (a takeover poisons only a
    pending entry above the mark, and writes its letter before acking it). A leaked worker
    credential's ``SADD``. The fold still honours them (every fold decides the same); their
    letters say so (``eventfleet.store.fold.SUSPECT_POISON_ERROR``), they are counted and logged,
    and
    ``verify`` reports them."""
    candidates = {p for p in poison if ids.after(p, after)}
    if not candidates:
        return set()
    candidates -= poison_lettered(r, keys, shard, POISON_REASON)
    found = applied_by_an_owner(r, keys, shard, candidates, written) if candidates else set()
    for eid in sorted(found):
        metrics.SUSPECT_POISON.labels(shard=shard).inc()
        log.error(
            "poison_mark_suspect",
            shard=shard,
            entry_id=eid,
            written=written,
            error="a poison mark on an entry an owner had applied: dead-lettered as the set "
            "says, with a letter that says so (eventfleet verify reports it; dlq redrive "
            "applies it again)",
        )
    return found


def quarantine(r: redis.Redis, keys: Keys, shard: str, start: Restored) -> None:
    """Keep a snapshot that does not decode for inspection (``NS:{f}:quarantine``, copied once
    per distinct content), count it and say so in one line. The owner's next snapshot replaces
    it in ``NS:{f}:snapshot``."""
    if start.raw is None or r.get(keys.quarantine(shard)) == start.raw:
        return  # kept and said already (this worker or another): one line per snapshot
    r.copy(keys.snapshot(shard), keys.quarantine(shard), replace=True)
    metrics.SNAPSHOTS_QUARANTINED.labels(shard=shard).inc()
    log.error(
        "snapshot_quarantined",
        shard=shard,
        error=start.error[:300],
        kept_in=keys.quarantine(shard),
        rebuilt_from=start.rebuilt_from or None,
        unowned=not start.rebuilt_from,
    )
