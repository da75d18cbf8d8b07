"""Reading one shard's state back from Redis: its snapshot (or, when it does not decode, the
best state that is provable without it), poison set, written-mark, the group's last-delivered
id, and the lease (owner and epoch).

Used by the worker's takeover and by the read-only tools; nothing here writes.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, NamedTuple

import redis

from eventfleet.ledger.state import ShardState, SnapshotError
from eventfleet.store import ids
from eventfleet.store.keys import GROUP, Keys


class Lease(NamedTuple):
    """A lease value, ``<worker id>:<epoch>`` (a worker id may itself hold ``:``)."""

    owner: str
    epoch: int


def parse_lease(value: object) -> Lease | None:
    """The owner and epoch of a lease value as read (bytes or text); None when not held."""
    if value is None:
        return None
    owner, _, epoch = ids.text(value).rpartition(":")
    return Lease(owner, int(epoch))


def load_snapshot(r: redis.Redis, keys: Keys, shard: str) -> ShardState | None:
    raw: Any = r.get(keys.snapshot(shard))
    return None if raw is None else ShardState.from_snapshot(raw, shard)


class SnapshotUnusable(Exception):
    """The shard's snapshot does not decode and no provable state replaces it: entries were
    removed from its log that no readable trim base covers. Nobody may own the shard until an
    operator restores a snapshot (docs/OPERATIONS.md)."""

    def __init__(self, shard: str, error: str) -> None:
        super().__init__(
            f"shard {shard}: its snapshot does not decode ({error}) and entries were trimmed "
            "from its log that no readable trim base covers: no provable state, left unowned "
            "(docs/OPERATIONS.md, 'A snapshot does not decode')"
        )
        self.shard = shard
        self.error = error


@dataclass
class Restored:
    """Where a shard's state starts: its snapshot, or ``rebuilt_from`` when the snapshot did
    not decode (``error``): ``trim base`` or ``full log``."""

    state: ShardState | None
    """None: there is no snapshot (fold the log from its start)."""
    error: str = ""
    rebuilt_from: str = ""
    raw: bytes | None = None
    """The snapshot as stored, when it did not decode."""


def restore(r: redis.Redis, keys: Keys, shard: str) -> Restored:
    """The shard's snapshot; when it does not decode, the best state provable without it: the
    trim base when nothing after it was removed from the log, else the empty state when nothing
    was ever removed (the whole log is there). ``SnapshotUnusable`` otherwise."""
    raw: Any = r.get(keys.snapshot(shard))
    if raw is None:
        return Restored(None)
    try:
        return Restored(ShardState.from_snapshot(raw, shard))
    except SnapshotError as exc:
        error = str(exc)
    base_raw: Any = r.get(keys.trim_base(shard))
    try:
        base = None if base_raw is None else ShardState.from_snapshot(base_raw, shard)
    except SnapshotError:
        base = None
    info: Any = r.xinfo_stream(keys.events(shard))
    if base is not None and covers(info, base.last_id):
        return Restored(base, error, "trim base", raw)
    if covers(info, "0-0"):
        return Restored(ShardState(shard), error, "full log", raw)
    raise SnapshotUnusable(shard, error)


def covers(info: Any, position: str) -> bool:
    """Whether a state at ``position`` and the log (its ``XINFO STREAM`` reply) hold every
    entry: nothing was ever removed, or every removed entry is at or before ``position``, which
    is known for sure only while the entry at ``position`` itself (or a later one, when the log
    is empty) is still there (``eventfleet verify`` starts its folds by the same rule)."""

    def field(name: str) -> Any:
        return info.get(name, info.get(name.encode()))

    if int(field("entries-added") or 0) == int(field("length") or 0):
        return True
    if ids.after(ids.text(field("max-deleted-entry-id") or "0-0"), position):
        return False
    first = field("first-entry")
    edge = ids.text(first[0]) if first else ids.text(field("last-generated-id"))
    return not ids.after(edge, position)


def group_info(groups: Iterable[Any], shard: str = "") -> Any:
    """Our consumer group's entry in an ``XINFO GROUPS`` reply."""
    for g in groups:
        if ids.text(g["name"]) == GROUP:
            return g
    where = f"stream of {shard}" if shard else "stream"
    raise LookupError(f"{where} has no '{GROUP}' group: run `eventfleet init`")


def last_delivered(r: redis.Redis, keys: Keys, shard: str) -> str:
    groups: Any = r.xinfo_groups(keys.events(shard))
    return ids.text(group_info(groups, shard)["last-delivered-id"])


def poison_ids(r: redis.Redis, keys: Keys, shard: str) -> set[str]:
    members: Any = r.smembers(keys.poison(shard))
    return {ids.text(m) for m in members}


def poison_lettered(r: redis.Redis, keys: Keys, shard: str, reason: str) -> set[str]:
    """Entry ids of the shard's dead letters with ``reason`` (its whole dead-letter stream)."""
    out: set[str] = set()
    lo = "-"
    while True:
        batch: Any = r.xrange(keys.dlq(shard), min=lo, max="+", count=2000)
        for _eid, fields in batch:
            if fields.get(b"reason", fields.get("reason")) in (reason, reason.encode()):
                out.add(ids.text(fields.get(b"entry_id", fields.get("entry_id", b""))))
        nxt = ids.after_range(batch[-1][0]) if batch else None
        if len(batch) < 2000 or nxt is None:
            return out
        lo = nxt


def applied_by_an_owner(
    r: redis.Redis, keys: Keys, shard: str, eids: set[str], written: str
) -> set[str]:
    """Which of ``eids`` an owner got past: at or below the written-mark (it started writing
    their effects), or delivered and acked (an owner acks an entry only once its effects are
    written). A takeover poisons only an entry that is neither (pending, above the mark)."""
    end = last_delivered(r, keys, shard)
    out = set()
    for eid in eids:
        if not ids.after(eid, written):
            out.add(eid)
        elif not ids.after(eid, end):
            pend: Any = r.xpending_range(keys.events(shard), GROUP, min=eid, max=eid, count=1)
            if not pend:
                out.add(eid)
    return out


def written_mark(r: redis.Redis, keys: Keys, shard: str) -> str:
    """The last entry id whose effects an owner has written, ``0-0`` when none."""
    mark: Any = r.get(keys.written(shard))
    return ids.text(mark) if mark is not None else "0-0"


def removed_after(r: redis.Redis, keys: Keys, shard: str, position: str) -> bool:
    """Whether entries after ``position`` may be gone from the shard's stream: it now starts
    after it (XTRIM, which Redis leaves out of max-deleted-entry-id), or an XDEL removed a newer
    one. A fold that starts at ``position`` would then step over entries it never sees."""
    info: Any = r.xinfo_stream(keys.events(shard))

    def field(name: str) -> str:
        value = info.get(name, info.get(name.encode()))
        return "0-0" if value is None else ids.text(value)

    first, deleted = field("recorded-first-entry-id"), field("max-deleted-entry-id")
    if int(info.get("entries-added", info.get(b"entries-added", 0))) == int(
        info.get("length", info.get(b"length", 0))
    ):
        first = "0-0"  # nothing was ever removed
    return ids.after(first, position) or ids.after(deleted, position)
