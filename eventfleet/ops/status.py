"""Fleet status from Redis alone: owners, epochs, lag, pending, snapshot age, replay estimate."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from typing import Any

import redis

from eventfleet.ledger.shards import ShardCounts
from eventfleet.store import ids, lag
from eventfleet.store.keys import Keys
from eventfleet.store.producers import registered
from eventfleet.store.producers import waiting as inbox_waiting
from eventfleet.store.shardreads import group_info, parse_lease

REPLAY_CAP = 100_000


@dataclass
class ShardStatus:
    shard: str
    owner: str | None
    epoch: int | None
    length: int
    last_id: str
    delivered_id: str
    lag: int | None
    """Events not yet applied: inbox + undelivered + pending (``eventfleet.store.lag.unapplied``,
    as the
    exporter's ``eventfleet_shard_lag``); None when Redis cannot tell the undelivered."""
    pending: int
    snapshot_age_s: float | None
    snapshot_id: str | None
    to_replay: int
    """Entries a new owner would replay now: those after the snapshot (capped)."""
    inbox: int = 0
    """Events producers appended that the owner has not moved into the log yet."""
    undelivered: int | None = None
    """Entries of the log not yet delivered to the group (Redis' group lag), else None."""
    snapshot_error: str | None = None
    """Why the snapshot does not decode (a takeover quarantines it and rebuilds the shard, or
    leaves it unowned: docs/OPERATIONS.md), else None."""
    quarantined: bool = False
    """A snapshot that did not decode is kept in ``NS:{f}:quarantine``."""

    @property
    def idle(self) -> bool:
        return self.inbox == 0 and self.pending == 0 and self.delivered_id == self.last_id


def shard_status(r: redis.Redis, keys: Keys, counts: ShardCounts) -> list[ShardStatus]:
    shards = counts.all_shards()
    names = registered(r, keys)
    pipe = r.pipeline(transaction=False)
    for s in shards:
        pipe.xinfo_stream(keys.events(s))
        pipe.xinfo_groups(keys.events(s))
        pipe.get(keys.lease(s))
        pipe.get(keys.snapshot(s))
        pipe.exists(keys.quarantine(s))
        for inbox in [keys.inbox(s), *(keys.inbox(s, n) for n in names)]:
            pipe.llen(inbox)
    replies = iter(pipe.execute())
    now_ms = time.time() * 1000
    rows = []
    for s in shards:
        info, groups, lease, snap, quarantined = (next(replies) for _ in range(5))
        group = group_info(groups, s)
        held = parse_lease(lease)
        undelivered, pending = group.get("lag"), int(group["pending"])
        waiting = inbox_waiting(replies, 1 + len(names))  # every inbox's head not counted
        age = snap_id = error = None
        if snap is not None:
            try:
                snap_id, age = _snapshot_position(snap, s, now_ms)
            except (ValueError, TypeError, KeyError, AttributeError) as exc:
                error = f"{type(exc).__name__}: {exc}"[:200]
        rows.append(
            ShardStatus(
                shard=s,
                owner=held.owner if held else None,
                epoch=held.epoch if held else None,
                length=int(info["length"]),
                last_id=ids.text(info["last-generated-id"]),
                delivered_id=ids.text(group["last-delivered-id"]),
                lag=None if undelivered is None else lag.unapplied(waiting, undelivered, pending),
                pending=pending,
                snapshot_age_s=age,
                snapshot_id=snap_id,
                to_replay=0,
                inbox=waiting,
                undelivered=undelivered,
                snapshot_error=error,
                quarantined=bool(quarantined),
            )
        )
    pipe = r.pipeline(transaction=False)
    starts = [(row, ids.after_range(row.snapshot_id or "0-0")) for row in rows]
    counted = [(row, start) for row, start in starts if start is not None]
    for row, start in counted:
        pipe.xrange(keys.events(row.shard), min=start, max="+", count=REPLAY_CAP)
    for (row, _start), tail in zip(counted, pipe.execute(), strict=True):
        row.to_replay = len(tail)
    return rows


def _snapshot_position(raw: bytes, shard: str, now_ms: float) -> tuple[str, float | None]:
    """The snapshot's last id and age; raises when it does not decode as this shard's."""
    doc = json.loads(raw)
    if doc.get("shard") != shard:
        raise ValueError(f"snapshot under {shard} belongs to {doc.get('shard')!r}")
    taken = doc.get("taken_ms")
    return str(doc["last_id"]), max(0.0, (now_ms - taken) / 1000) if taken else None


def damage_lines(rows: list[ShardStatus]) -> list[str]:
    """One line per shard whose snapshot does not decode, or was quarantined: which, and why."""
    out = []
    for r in rows:
        if r.snapshot_error:
            fate = f"owned by {r.owner}, whose next snapshot replaces it" if r.owner else "unowned"
            out.append(
                f"{r.shard}: snapshot does not decode ({r.snapshot_error}); {fate} "
                "(a takeover rebuilds it from the trim base or the full log, or leaves it "
                "unowned when neither is provable: docs/OPERATIONS.md)"
            )
        elif r.quarantined:
            out.append(
                f"{r.shard}: a snapshot that did not decode is kept in its quarantine key; "
                "the shard was rebuilt (docs/OPERATIONS.md)"
            )
    return out


def as_json(rows: list[ShardStatus]) -> dict[str, Any]:
    return {
        "shards": [asdict(r) | {"idle": r.idle} for r in rows],
        "totals": {
            "lag": sum(r.lag or 0 for r in rows),
            "pending": sum(r.pending for r in rows),
            "inbox": sum(r.inbox for r in rows),
            "owned": sum(1 for r in rows if r.owner),
            "shards": len(rows),
            "idle": all(r.idle for r in rows),
        },
    }


def _idle_round(r: redis.Redis, keys: Keys, shards: list[str]) -> list[str] | None:
    """The last-generated id of every shard stream if all are delivered and acked and every
    inbox is empty, else None."""
    names = registered(r, keys)
    pipe = r.pipeline(transaction=False)
    for s in shards:
        pipe.xinfo_stream(keys.events(s))
        pipe.xinfo_groups(keys.events(s))
        for inbox in [keys.inbox(s), *(keys.inbox(s, n) for n in names)]:
            pipe.llen(inbox)
    replies = iter(pipe.execute())
    tails = []
    for s in shards:
        info, groups = next(replies), next(replies)
        group = group_info(groups, s)
        tail = ids.text(info["last-generated-id"])
        if inbox_waiting(replies, 1 + len(names)) or int(group["pending"]):
            return None
        if ids.text(group["last-delivered-id"]) != tail:
            return None
        tails.append(tail)
    return tails


def is_idle(r: redis.Redis, keys: Keys, counts: ShardCounts) -> bool:
    """Every inbox empty and every shard stream fully delivered and acked: no entry and no
    saga step in flight.

    Effects are written before the ack, so an acked order's charge is already in the user's
    stream, where it shows as undelivered until applied. The shards are read one after the
    other, so a charge written to a shard already read would be missed by one round: two
    idle rounds with no stream having grown in between rule that out.
    """
    shards = counts.all_shards()
    first = _idle_round(r, keys, shards)
    return first is not None and _idle_round(r, keys, shards) == first


def wait_idle(
    r: redis.Redis, keys: Keys, counts: ShardCounts, timeout_s: float, poll_s: float = 0.1
) -> bool:
    deadline = time.monotonic() + timeout_s
    while True:
        if is_idle(r, keys, counts):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(poll_s)
