"""Planned hand-overs arrive at once: the shards a live peer is about to hand this worker.

When a worker joins a running fleet, its targets are held by live peers, which hand them over
(final snapshot, then release) at their next pass, at once when their liveness check sees the
newcomer (``eventfleet.worker.liveness``). The newcomer used to acquire only at its own next pass, a
third of a TTL later (its first pass acquires nothing: see ``first_pass_acquires``), so every
moved shard stayed without an owner for most of that. Now a targeted shard whose lease a
live peer holds is *incoming*: the worker tries it again every ``RETRY_S`` until it is ours,
no longer targeted, or a TTL has passed (its holder hands over within one of its passes, at
most a third of a TTL apart; after a TTL the regular passes go on).

A worker that leaves (SIGTERM) leaves the member set before it hands its shards over
(``Ownership.drain``): its peers' passes target them at once and find each lease held by a
non-member, which they try again every ``RETRY_S`` too, so each shard is taken the moment it
is released rather than after the whole drain.

Nothing here changes what a lease fences: a shard is acquired only once its lease is gone
(released after the final snapshot, or lapsed), with a new epoch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from eventfleet.store import ids
from eventfleet.worker.conn import Conn

RETRY_S = 0.025
"""How often a shard being handed to this worker (or held by a member that left) is tried."""


@dataclass
class Claim:
    """A lease just acquired, until its shard is taken over."""

    shard: str
    epoch: int
    token: str
    renewed: float
    """Monotonic time of the last renewal of this lease: the acquisition's send until the
    takeover renews it (it may wait for the takeovers of shards claimed before it)."""
    broke: str = ""
    """The token of the lease this acquisition broke (its holder's connection closed)."""
    sent: float = 0.0
    """Monotonic time the acquisition was sent (the lease is ours from its reply)."""


def holder_of(token: Any) -> str | None:
    """The worker id in a lease token (``<id>:<epoch>``), None for no lease."""
    return None if token is None else ids.text(token).rpartition(":")[0]


def first_pass_acquires(conn: Conn, targeted: list[str], members: list[str], me: str) -> bool:
    """Whether a worker's first pass may acquire its targets: only when a live peer holds one
    of them (a running fleet it joins, whose members already see it). A fleet that starts
    together finds its leases free: each worker waits for its next pass, by when the others'
    heartbeats are visible, so the first one up does not take every shard and hand most of
    them over again. One read-only round trip (GET of the targeted leases)."""
    if not targeted:
        return False
    peers = set(members) - {me}

    def queue(pipe: Any, i: int) -> None:
        pipe.get(conn.keys.lease(targeted[i]))

    keys = [conn.keys.lease(s) for s in targeted]
    held = conn.call(lambda: conn.per_shard(keys, queue, all_failed=False), "acquire")
    return any(holder_of(h) in peers for h in held)


class Incoming:
    """The targeted shards held by someone else that are tried again soon, and until when."""

    def __init__(self, ttl_s: float) -> None:
        self._ttl = ttl_s
        self._until: dict[str, float] = {}
        self._next: dict[str, float] = {}

    def retry_at(self, shard: str, holder: str | None, me: str, now: float) -> float | None:
        """When to try targeted ``shard`` again after finding it held by ``holder``: soon (a
        live peer hands it over at its next pass; a member that left releases it as it
        drains), for at most a TTL from the first refusal; None when the regular passes will
        do (after that TTL, or our own id: a second process started with it)."""
        if holder is None or holder == me:
            return None
        until = self._until.setdefault(shard, now + self._ttl)
        if now >= until:
            self._next.pop(shard, None)
            return None
        self._next[shard] = now + RETRY_S
        return self._next[shard]

    @property
    def waiting(self) -> bool:
        """Some shard is being handed to us: the loop leaves its standby copies until then."""
        return bool(self._next)

    def due(self, now: float) -> list[str]:
        """The shards whose next try is due (``Ownership._acquire`` claims them between
        takeovers)."""
        return sorted(s for s, t in self._next.items() if t <= now)

    def done(self, shard: str) -> None:
        self._until.pop(shard, None)
        self._next.pop(shard, None)

    def keep(self, targeted: set[str]) -> None:
        """Forget shards no longer targeted."""
        for s in [s for s in self._until if s not in targeted]:
            self.done(s)
