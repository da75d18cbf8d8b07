"""Waiting for an order's outcome: the record its user's shard appends for it.

An order's record lands on ``<ns>:{u<n>}:outcomes`` of its user's shard after the order was
published (the record comes from applying it), so the wait reads that stream forward from a
little before the publish (the producer's clock; the producer's entry gets its id only when
its shard's owner moves it out of the inbox): ``LOOKBACK_MS`` covers a publish that was sent
twice (a lost reply) whose first copy is the one that took effect, and clocks of the
producer's host and of Redis that differ a little. The record answering this very order carries its
``ref``, ``<source>/<seq>`` of the order entry (the same for every copy of one publish):
``confirmed``, ``rejected`` (with a reason) or ``duplicate`` (the order id was decided
before; ``first`` says how, and that decision stands).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import redis

from eventfleet.ledger.codec import decode_outcome
from eventfleet.ledger.events import Order, OrderOutcome
from eventfleet.ledger.shards import ShardCounts, destination, user_shards_since
from eventfleet.producer.client import Producer
from eventfleet.store import ids
from eventfleet.store.connection import is_cluster
from eventfleet.store.keys import Keys

RESHARD_TARGET = "reshard_target"
"""The field of meta where a running reshard records the counts it grows to."""

LOOKBACK_MS = 60_000
"""How far before the publish the wait starts reading outcomes."""

_BLOCK_MS = 500


def outcome_streams(keys: Keys, user_id: int, then: ShardCounts, now: ShardCounts) -> list[str]:
    """The outcome streams an order of ``user_id`` routed with ``then`` may be decided on once
    the namespace has ``now``: its user shard under every count between (an order routed with
    old counts is forwarded to the child that holds the user, which decides it)."""
    return [keys.outcomes(s) for s in user_shards_since(user_id, then.users, now.users)]


def read_outcomes(r: redis.Redis, starts: dict[str, str], block_ms: int) -> list[Any]:
    """``XREAD`` of the outcome streams ``starts`` names, from their positions: one call on a
    single Redis; on a cluster one per stream (each is in its shard's slot), the block split
    between them. Returns XREAD's ``[(stream, entries)]``."""
    if len(starts) == 1 or not is_cluster(r):
        return list(r.xread(starts, count=1000, block=block_ms) or [])  # type: ignore[arg-type]
    out: list[Any] = []
    each = max(1, block_ms // len(starts))
    for stream, begin in starts.items():
        out += r.xread({stream: begin}, count=1000, block=each) or []
    return out


def matching(entries: Any, ref: str, order: Order) -> OrderOutcome | None:
    """The outcome record among ``entries`` (``(id, fields)``) that answers ``order`` placed
    with ``ref``."""
    for _eid, fields in entries:
        raw = fields.get(b"outcome", fields.get("outcome"))
        if raw is None:
            continue
        try:
            outcome = decode_outcome(raw)
        except ValueError:  # not a record a worker wrote: not ours either
            continue
        if outcome.ref == ref and (outcome.user_id, outcome.order_id) == (
            order.user_id,
            order.order_id,
        ):
            return outcome
    return None


class OutcomeWait:
    """One order's wait over the outcome streams that may answer it: where each is read from,
    the deadline, and which record answers. The sync wait (``wait_outcome``) and the asyncio
    client's share it; only their reads differ.

    ``at_ms``: when the order was published (the producer's clock); ``then``: the counts it
    was routed with (or grew from)."""

    def __init__(
        self,
        keys: Keys,
        order: Order,
        ref: str,
        at_ms: int,
        then: ShardCounts,
        timeout_s: float,
    ) -> None:
        self.keys, self.order, self.ref, self.then = keys, order, ref, then
        self.start = f"{max(0, at_ms - LOOKBACK_MS)}-0"
        self.starts = dict.fromkeys(outcome_streams(keys, order.user_id, then, then), self.start)
        """Each outcome stream read, and the id it is read after."""
        self.deadline = time.monotonic() + timeout_s

    def watch(self, now: ShardCounts) -> None:
        """Once the counts grew to ``now``: read the streams of the shards the order may have
        been forwarded to as well, from the start."""
        for stream in outcome_streams(self.keys, self.order.user_id, self.then, now):
            self.starts.setdefault(stream, self.start)

    def watch_target(self, raw: Any) -> None:
        """A reshard's recorded target (``reshard_target`` in meta, ``"<users>,<items>"``)
        while one runs: from a parent's split marker on, its child decides a moved user's
        orders, before the counts are published (a command killed once it marked, or still
        waiting for the seeds), so that shard's stream is read too. Nothing recorded, or a
        value that does not parse: nothing more to read."""
        if not raw:
            return
        users, _, items = ids.text(raw).partition(",")
        try:
            target = ShardCounts(int(users), int(items))
        except ValueError:
            return
        self.watch(target)

    def block_ms(self) -> int:
        """How long the next read may block: what is left of the wait, at most ``_BLOCK_MS``."""
        return max(1, min(_BLOCK_MS, int((self.deadline - time.monotonic()) * 1000)))

    def answer(self, replies: Any) -> OrderOutcome | None:
        """The outcome among XREAD's ``[(stream, entries)]`` that answers the order; each
        stream's position moved past what was read."""
        for name, entries in replies:
            if entries:
                self.starts[ids.text(name)] = ids.text(entries[-1][0])
            found = matching(entries, self.ref, self.order)
            if found is not None:
                return found
        return None

    def over(self) -> bool:
        return time.monotonic() >= self.deadline


def wait_outcome(
    r: redis.Redis,
    keys: Keys,
    counts: ShardCounts,
    order: Order,
    ref: str,
    entry_id: str,
    timeout_s: float,
    counts_now: Callable[[], ShardCounts] | None = None,
) -> OrderOutcome | None:
    """The outcome record of ``order``, published at ``entry_id`` (``<ms>-0``, the producer's
    clock) with (source, seq) ``ref`` (``<source>/<seq>``) routed with ``counts``, or None
    when none arrives within ``timeout_s`` seconds. ``counts_now`` gives the counts as they
    are learnt meanwhile (re-read when due): once they grew, the outcome streams of the
    shards the order may have been forwarded to are read too, and while a reshard runs, those
    of its target (one ``HGET`` per read)."""
    wait = OutcomeWait(keys, order, ref, ids.millis(entry_id), counts, timeout_s)
    while True:
        if counts_now is not None:
            wait.watch(counts_now())
        wait.watch_target(r.hget(keys.meta, RESHARD_TARGET))
        found = wait.answer(read_outcomes(r, wait.starts, wait.block_ms()))
        if found is not None:
            return found
        if wait.over():
            return None


def publish_order(p: Producer, order: Order) -> tuple[str, str]:
    """Publish one order; return when (``<ms>-0``, this host's clock, just before the push)
    and its ref (``<source>/<seq>``)."""
    inbox, text = p.stamp(order)
    at = f"{int(time.time() * 1000)}-0"
    p.send([(inbox, text)])
    return at, f"{p.source}/{p.seq[destination(order, p.counts)]}"


def place_order(p: Producer, order: Order, timeout_s: float) -> OrderOutcome | None:
    """Publish ``order`` and wait up to ``timeout_s`` seconds for its outcome record (None
    when none came): ``status`` is ``confirmed``, ``rejected`` or ``duplicate``."""
    entry, ref = publish_order(p, order)
    then = p.counts

    def counts_now() -> ShardCounts:
        p.learn_counts()
        return p.counts

    return wait_outcome(p.r, p.keys, then, order, ref, entry, timeout_s, counts_now)
