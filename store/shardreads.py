"""Reading one shard's state back from Redis: its snapshot, poison set, written-mark, the
group's last-delivered id, and the lease (owner and epoch).

Used by the worker's takeover and by the read-only tools; nothing here writes.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, NamedTuple

import redis

from ledger.state import ShardState
from store import ids
from store.keys import GROUP, Keys


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
