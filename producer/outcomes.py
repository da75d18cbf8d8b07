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
from typing import Any

import redis

from eventfleet.ledger.codec import decode_outcome
from eventfleet.ledger.events import Order, OrderOutcome
from eventfleet.ledger.shards import ShardCounts, destination, user_shard
from eventfleet.producer.client import Producer
from eventfleet.store import ids
from eventfleet.store.keys import Keys

LOOKBACK_MS = 60_000
"""How far before the publish the wait starts reading outcomes."""

_BLOCK_MS = 500


def wait_outcome(
    r: redis.Redis,
    keys: Keys,
    counts: ShardCounts,
    order: Order,
    ref: str,
    entry_id: str,
    timeout_s: float,
) -> OrderOutcome | None:
    """The outcome record of ``order``, published at ``entry_id`` (``<ms>-0``, the producer's
    clock) with (source, seq) ``ref`` (``<source>/<seq>``), or None when none arrives within
    ``timeout_s`` seconds."""
    stream = keys.outcomes(user_shard(order.user_id, counts))
    start = f"{max(0, ids.millis(entry_id) - LOOKBACK_MS)}-0"
    deadline = time.monotonic() + timeout_s
    while True:
        left_ms = int((deadline - time.monotonic()) * 1000)
        reply: Any = r.xread({stream: start}, count=1000, block=max(1, min(_BLOCK_MS, left_ms)))
        for _name, entries in reply or []:
            for eid, fields in entries:
                start = ids.text(eid)
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
        if time.monotonic() >= deadline:
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
    return wait_outcome(p.r, p.keys, p.counts, order, ref, entry, timeout_s)
