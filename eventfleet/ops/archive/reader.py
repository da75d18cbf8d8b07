"""Reading an archive back for ``verify --archive``: a shard's archived events as a
``eventfleet.store.fold.History`` in front of its live log, and its archived outcome and dead-letter
records."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from eventfleet.ledger.shards import ShardCounts
from eventfleet.ops.archive.segments import (
    ArchiveError,
    Manifest,
    check_top,
    entries_between,
    load_manifest,
    stream_dir,
)
from eventfleet.store.fold import History
from eventfleet.store.keys import FWD_FIELD, entry_event


class Archive:
    """An archive directory written by ``eventfleet archive``, opened for reading."""

    def __init__(self, root: Path, namespace: str, counts: ShardCounts) -> None:
        if not root.is_dir():
            raise ArchiveError(f"archive directory {root} does not exist")
        check_top(root, namespace, counts.users, counts.items, create=False)
        self.root = root

    def manifest(self, shard: str, stream: str) -> Manifest | None:
        return load_manifest(self.root, shard, stream)

    def entries(
        self, shard: str, stream: str, after: str = "0-0", until: str = "+"
    ) -> Iterator[tuple[str, dict[bytes, bytes]]]:
        m = self.manifest(shard, stream)
        if m is None:
            return iter(())
        return entries_between(stream_dir(self.root, shard, stream), m.segments, after, until)

    def history(self, shard: str) -> History:
        """The shard's archived events, for ``eventfleet.store.fold.fold(history=...)``."""

        def between(after: str, until: str) -> Iterator[tuple[str, bytes | None, bool, str, str]]:
            for eid, fields in self.entries(shard, "events", after, until):
                # every field is archived, the mark and a forwarded entry's path (``fwd``)
                # too; a segment from before forwarding holds none: ""
                path = fields.get(FWD_FIELD)
                yield eid, *entry_event(fields), path.decode() if path else ""

        return between


__all__ = ["Archive", "ArchiveError"]
