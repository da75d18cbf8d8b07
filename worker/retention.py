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

A shard born of an online growth (docs/DESIGN-DECISIONS.md, section 35) in a namespace the
archive has seen (its ancestor at ``init`` has an archived-up-to mark) is held as
``EVENTFLEET_ARCHIVE_REQUIRED`` holds every shard: nothing is trimmed before ``eventfleet
archive`` has seen it too. Without this, a child trimmed before the archive's next run (which
finds it only once the counts are published) would leave the archive a gap where its first
forwards and its seed's history were, and ``verify --archive`` could not check it from its
first entry. One ``EXISTS`` per trim of such a shard only.
"""

from __future__ import annotations

from typing import Any

import structlog

from eventfleet.ledger.shards import ShardCounts, parse_shard
from eventfleet.store.connection import TRANSIENT
from eventfleet.store.namespace import read_init_counts
from eventfleet.store.settings import Settings
from eventfleet.worker.conn import Conn
from eventfleet.worker.metrics import TRIMMED
from eventfleet.worker.owned import Owned

log = structlog.get_logger("eventfleet.worker")
STREAMS = ("events", "outcomes", "dlq")
_INIT: dict[str, ShardCounts] = {}
"""Per namespace, its counts at ``init`` (they never change: read once per process)."""


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
        held = settings.archive_required or held_for_archive(conn, shard, deadline)
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
                wait_for_archive=held,
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


def held_for_archive(conn: Conn, shard: str, deadline: float) -> bool:
    """Whether ``shard``, born of a split, waits for the archive: the namespace has been
    archived (the shard's ancestor at ``init`` has an archived-up-to mark). A shard that
    existed at ``init`` is held by its own mark once archived, and by nothing before."""
    k = conn.keys
    init = _INIT.get(k.ns)
    if init is None:
        init = _INIT[k.ns] = conn.call(lambda: read_init_counts(conn.r, k), "trim", deadline)
    fam, index = parse_shard(shard)
    count = init.users if fam == "u" else init.items
    if index < count:
        return False
    root = f"{fam}{index % count}"
    return bool(conn.call(lambda: conn.r.exists(k.archived(root)), "trim", deadline))
