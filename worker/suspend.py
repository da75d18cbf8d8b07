"""Static membership's leave (``EVENTFLEET_REJOIN_GRACE_MS`` > 0): keep the shards for the
member's next process instead of handing them over (docs/DESIGN-DECISIONS.md, section 14)."""

from __future__ import annotations

import functools
from collections.abc import Callable

import structlog

from eventfleet.store.connection import TRANSIENT
from eventfleet.store.settings import Settings
from eventfleet.worker.conn import Conn
from eventfleet.worker.owned import Owned

log = structlog.get_logger("eventfleet.worker")


def suspend(
    conn: Conn, settings: Settings, held: list[Owned], snapshot: Callable[[Owned], bool]
) -> bool:
    """Write final snapshots, then extend this member's heartbeat and each lease to the rejoin
    grace. Nobody else is targeted these shards meanwhile (the member is still in the set),
    so a process restarted with the same id takes them back (``acquire`` with reclaim) from a
    snapshot at the end of the log: no replay, and no other shard moves. If none comes back,
    heartbeat and leases lapse after the grace and the shards move once, to their next
    targets. False when Redis could not be reached for some of it."""
    clean = True
    grace = settings.rejoin_grace_ms
    for o in held:
        try:
            if snapshot(o):
                lease, token = conn.keys.lease(o.name), o.token
                conn.call(
                    functools.partial(
                        conn.scripts.renew, conn.r, lease=lease, token=token, ttl_ms=grace
                    ),
                    "suspend",
                )
        except TRANSIENT as exc:
            clean = False
            log.warning("suspend_failed", shard=o.name, epoch=o.epoch, error=str(exc)[:200])
    try:
        conn.call(
            lambda: conn.scripts.heartbeat(
                conn.r, workers=conn.keys.workers, worker_id=settings.worker_id, ttl_ms=grace
            ),
            "suspend",
        )
    except TRANSIENT:
        clean = False  # our heartbeat expires by itself
    log.info(
        "worker_suspended",
        clean=clean,
        rejoin_grace_ms=grace,
        shards=sorted(o.name for o in held),
    )
    return clean
