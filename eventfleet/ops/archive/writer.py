"""``eventfleet archive DIR``: copy every shard's streams out of Redis into segments on disk.

Per shard and stream (events, outcomes, dead letters), in this order:

1. Files a killed run left that the manifest does not list are removed.
2. The shard's archived-up-to mark (``NS:{f}:archived``) is created or repaired to the
   manifest's last id. From then on the owner's trimming never passes it, so nothing can be
   trimmed before it is archived; a shard the archive has seen stays held to it.
3. Entries Redis deleted beyond what the archive holds (trimmed before archiving began, or
   while the mark was absent) are recorded in the manifest as a gap; ``verify --archive`` says
   so and does not claim that shard from its first event. ``XDEL`` raises the stream's
   ``max-deleted-entry-id``; retention's ``XTRIM`` does not, so a trimmed head is found by
   counting (``trimmed_head``).
4. The entries after the manifest's last id, up to the stream's last entry when the run
   began, go into segments of at most ``segment_entries`` entries. Each segment is written and
   flushed to disk, then listed in the manifest (written atomically), then the mark is raised
   to its last id.

A run killed at any point leaves the archive at a segment boundary: the next run starts after
the manifest's last id, so it neither loses nor repeats an entry. One run at a time per
directory (a lock file); a second one stops with one line.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
from redis import exceptions as rx

from eventfleet.ledger.shards import ShardCounts
from eventfleet.ops.archive.segments import (
    STREAMS,
    ArchiveError,
    Gap,
    Manifest,
    SegmentWriter,
    check_top,
    load_manifest,
    remove_uncommitted,
    save_manifest,
    stream_dir,
)
from eventfleet.store import ids, lua
from eventfleet.store.keys import Keys

SEGMENT_ENTRIES = 100_000
"""Entries per segment at most (a run writes fewer when the stream holds fewer new ones)."""
READ = 2000


@dataclass
class ArchiveStats:
    segments: int = 0
    entries: int = 0
    bytes: int = 0
    gaps: int = 0
    removed_uncommitted: int = 0
    seconds: float = 0.0


def stream_key(keys: Keys, shard: str, stream: str) -> str:
    return {"events": keys.events, "outcomes": keys.outcomes, "dlq": keys.dlq}[stream](shard)


def streams_of(shard: str) -> tuple[str, ...]:
    """Item shards write no outcomes."""
    return STREAMS if shard.startswith("u") else ("events", "dlq")


@contextmanager
def locked(root: Path) -> Iterator[None]:
    fd = os.open(root / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ArchiveError(f"another `eventfleet archive` is writing to {root}") from None
        try:
            yield
        finally:
            # released on the description itself: a child forked meanwhile (and not yet
            # exec'd) holds a copy of the descriptor, which would otherwise keep the lock
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def raise_mark(r: redis.Redis, keys: Keys, shard: str, stream: str, entry_id: str) -> None:
    """Raise the ``stream`` field of the shard's archived-marks hash to ``entry_id``, never
    lower it (``eventfleet/store/lua/raise_mark.lua``, sent with its text). allow-oom: archiving and
    trimming are how a full Redis recovers."""
    r.eval(lua.source("raise_mark", lua.PRELUDE), 1, keys.archived(shard), stream, entry_id)


def max_deleted(r: redis.Redis, key: str) -> str:
    try:
        info: Any = r.xinfo_stream(key)
    except rx.ResponseError as exc:
        if "no such key" in str(exc):
            return "0-0"
        raise
    return ids.text(info.get("max-deleted-entry-id") or "0-0")


def trimmed_head(r: redis.Redis, key: str, m: Manifest) -> str | None:
    """The id up to which entries the archive never had were trimmed from the head of
    ``key`` (retention's ``XTRIM MINID``, which leaves ``max-deleted-entry-id`` as it was),
    or None. Counted: when the stream's first entry comes after the archive's last, every
    archived entry has left Redis, so more removed entries than archived ones means some
    were trimmed unseen, all before the first entry left. Only asked of a complete
    manifest (one with a gap already is not claimed from its first entry)."""
    if not m.complete:
        return None
    try:
        info: Any = r.xinfo_stream(key)
    except rx.ResponseError as exc:
        if "no such key" in str(exc):
            return None
        raise
    removed = int(info["entries-added"]) - int(info["length"])
    if removed <= m.count:
        return None
    first = info.get("first-entry")
    if not first:  # every entry left: up to the last one Redis gave an id
        return ids.text(info["last-generated-id"])
    first_id = ids.text(first[0])
    if not ids.after(first_id, m.last):
        return None  # archived entries are still there: a removal past them is an XDEL
    ms, seq = ids.parse(first_id)
    return f"{ms}-{seq - 1}" if seq else f"{ms - 1}-18446744073709551615"


def last_entry(r: redis.Redis, key: str) -> str | None:
    tail: Any = r.xrevrange(key, "+", "-", count=1)
    return ids.text(tail[0][0]) if tail else None


def archive(
    r: redis.Redis,
    keys: Keys,
    counts: ShardCounts,
    root: Path,
    *,
    segment_entries: int = SEGMENT_ENTRIES,
    on_entries: Callable[[int], None] = lambda n: None,
) -> ArchiveStats:
    """Archive every shard's streams into ``root``; see the module docstring."""
    t0 = time.monotonic()
    root.mkdir(parents=True, exist_ok=True)
    stats = ArchiveStats()
    with locked(root):
        check_top(root, keys.ns, counts.users, counts.items, create=True)
        for shard in counts.all_shards():
            for stream in streams_of(shard):
                _archive_stream(r, keys, shard, stream, root, stats, segment_entries, on_entries)
    stats.seconds = time.monotonic() - t0
    return stats


def _archive_stream(
    r: redis.Redis,
    keys: Keys,
    shard: str,
    stream: str,
    root: Path,
    stats: ArchiveStats,
    segment_entries: int,
    on_entries: Callable[[int], None],
) -> None:
    key = stream_key(keys, shard, stream)
    directory = stream_dir(root, shard, stream)
    directory.mkdir(parents=True, exist_ok=True)
    m = load_manifest(root, shard, stream) or Manifest(shard, stream)
    stats.removed_uncommitted += remove_uncommitted(directory, m)
    raise_mark(r, keys, shard, stream, m.last)
    deleted = max_deleted(r, key)
    trimmed = trimmed_head(r, key, m)
    if trimmed is not None and ids.after(trimmed, deleted):
        deleted = trimmed
    if ids.after(deleted, m.last):
        m.gaps.append(Gap(after=m.last, upto=deleted))
        save_manifest(root, m)
        stats.gaps += 1
    end = last_entry(r, key)
    if end is None or not ids.after(end, m.last):
        if not (directory / "manifest.json").exists():
            save_manifest(root, m)
        return
    writer: SegmentWriter | None = None
    lo = m.last

    def commit(w: SegmentWriter) -> None:
        seg = w.commit()
        m.segments.append(seg)
        save_manifest(root, m)
        raise_mark(r, keys, shard, stream, seg.last)
        stats.segments += 1
        stats.entries += seg.count
        stats.bytes += seg.bytes

    try:
        while True:
            batch: Any = r.xrange(key, min=f"({lo}", max=end, count=READ)
            for eid_b, fields in batch:
                if writer is None:
                    writer = SegmentWriter(directory)
                writer.add(ids.text(eid_b), fields)
                if writer.count >= segment_entries:
                    commit(writer)
                    writer = None
            if batch:
                on_entries(len(batch))
                lo = ids.text(batch[-1][0])
            if len(batch) < READ:
                break
        if writer is not None:
            commit(writer)
            writer = None
    finally:
        if writer is not None:
            writer.abandon()
