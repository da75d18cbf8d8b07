"""What "lag" means, in one place: ``eventfleet status``, the exporter's gauges (and so the
alerts, KEDA and the dashboard) and ``eventfleet up`` all count it with ``unapplied``, and the
exporter's age with ``age_s`` (docs/OBSERVABILITY.md, "Lag").

A shard's events go producer -> inbox (a list) -> the shard's log (a stream, moved there by
the owner) -> delivered to the owner (pending) -> applied and acked. Lag is every event not
yet applied: waiting in the inbox, in the log and not yet delivered, or delivered and not
acked. Its age is that of the oldest of them.
"""

from __future__ import annotations


def unapplied(inbox: int, undelivered: int, pending: int) -> int:
    """A shard's lag: events waiting in its inbox (its head not counted), entries of its log
    not yet delivered to the group, and entries delivered and not yet acked. An inbox event
    counts one, a log entry one (a bundle moved from the inbox is one entry)."""
    return inbox + undelivered + pending


def age_s(now_ms: int, oldest_log_ms: int | None, inbox_since_ms: int | None) -> float:
    """A shard's lag in seconds: the age of the oldest event not applied. For the log that is
    the time in its entry id (Redis' clock when the entry was added); an event still in the
    inbox carries no time, so its age counts from ``inbox_since_ms``, when the exporter first
    saw that very event at the front of the inbox (a lower bound: it is exact to one pass
    while nothing moves the inbox, which is when it matters: no owner, or a log that refuses
    entries). 0 when nothing waits."""
    oldest = min((t for t in (oldest_log_ms, inbox_since_ms) if t is not None), default=None)
    return 0.0 if oldest is None else max(0.0, (now_ms - oldest) / 1000)
