"""The archive of history trimmed from Redis: ``eventfleet archive`` writes it (``writer``),
``verify --archive`` reads it back (``reader``); ``segments`` is the format on disk."""

from eventfleet.ops.archive.reader import Archive
from eventfleet.ops.archive.segments import ArchiveError
from eventfleet.ops.archive.writer import ArchiveStats, archive

__all__ = ["Archive", "ArchiveError", "ArchiveStats", "archive"]
