"""Retention: after each periodic snapshot, the shard's owner trims what that snapshot covers.

One fenced script (``eventfleet/store/lua/retain.lua``) removes event entries below the snapshot
just
saved, older than ``EVENTFLEET_RETAIN_S`` and at or below what ``eventfleet archive`` has on
disk (when the shard has been archived, or always with ``EVENTFLEET_ARCHIVE_REQUIRED``), and
outcome and dead-letter records older than the window (never a stream's last record). A failed
trim is only logged: the next snapshot tries again, and nothing waits for it.

A takeover trims too, right after restoring the snapshot (``take_over``'s ``restored``): when
Redis is full, a shard whose effects cannot be written is dropped and taken over again and again
without reaching a periodic snapshot, and the snapshot already in Redis is what lets it free
memory.
"""

from __future__ import annotations

from typing import Any

import structlog

from eventfleet.store.connection import TRANSIENT
from eventfleet.store.settings import Settings
from eventfleet.worker.conn import Conn
from eventfleet.worker.metrics import TRIMMED
from eventfleet.worker.owned import Owned

log = structlog.get_logger("eventfleet.worker")
STREAMS = ("events", "outcomes", "dlq")


def retain(conn: Conn, settings: Settings, o: Owned, snapshot_ms: int) -> None:
    """Trim shard ``o`` up to the snapshot of its current state, saved at ``snapshot_ms``."""
    trim(conn, settings, o.name, o.token, o.epoch, o.state.last_id, snapshot_ms, o.deadline)


def trim(
    conn: Conn,
    settings: Settings,
    shard: str,
    token: str,
    epoch: int,
    snapshot_id: str,
    snapshot_ms: int,
    deadline: float,
) -> None:
    """Trim ``shard`` up to its snapshot in Redis, at ``snapshot_id`` and taken at
    ``snapshot_ms`` (0: outcomes and dead letters are left alone)."""
    if settings.retain_s is None:
        return
    k = conn.keys
    window_ms = int(settings.retain_s * 1000)
    try:
        removed: Any = conn.call(
            lambda: conn.scripts.retain(
                conn.r,
                lease=k.lease(shard),
                events=k.events(shard),
                outcomes=k.outcomes(shard),
                dlq=k.dlq(shard),
                snapshot=k.snapshot(shard),
                trim_base=k.trim_base(shard),
                archived=k.archived(shard),
                token=token,
                snapshot_id=snapshot_id,
                snapshot_ms=snapshot_ms,
                window_ms=window_ms,
                wait_for_archive=settings.archive_required,
            ),
            "trim",
            deadline,
        )
    except TRANSIENT as exc:
        log.warning("trim_skipped", shard=shard, epoch=epoch, error=str(exc)[:200])
        return
    if removed == -1:
        return  # the lease moved on; the next fenced call drops the shard
    counts = dict(zip(STREAMS, (int(n) for n in removed), strict=True))
    for stream, n in counts.items():
        if n:
            TRIMMED.labels(shard=shard, stream=stream).inc(n)
    if any(counts.values()):
        log.info("trimmed", shard=shard, epoch=epoch, upto=snapshot_id, **counts)
