"""Deferring the read model's write while a shard is behind (``EVENTFLEET_MODEL_DEFER_MS``).

A batch of top-ups writes nothing but its read-model fields, one per user it touched. While a
shard works through a backlog (its read came back full), a user is often touched again a
batch or two later, and the first write of its field is overwritten before anyone could
use it. So while a shard's reads come back full and its batches write nothing else, the
model's write waits, its changes noted on the shard (``Owned.pending``), and goes with a
later batch's write as one set of fields at the values of that batch: each user once.

What a reader sees meanwhile is the model as of the last write: a value the fold had, never
one from the future and, with a receipt, never older than it (the client waits until the
model's ``w:<source>`` reaches the receipt's seq, which the deferred write raises with the
values). A deferred write is made, at the latest:

- with the first batch that writes anything else (an order's outcome record must find the
  model already past it), removes a field (a prune, a split), or is not full (the shard
  caught up: readers waiting with a receipt are answered at once);
- when a poll reads nothing for the shard;
- ``EVENTFLEET_MODEL_DEFER_MS`` after the oldest deferred batch;
- before every ownership pass (snapshots, hand-overs, releases) and before the worker
  drains: a snapshot never covers an entry whose fields are not written, so a takeover that
  replays from it rewrites every field the replay touched (``takeover.sync_model``).

A worker killed with a write deferred leaves the model behind its acked entries: the next
owner's takeover replays from the last snapshot and rewrites what the replay touched, as
for any lost write. 0 turns deferring off.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sized

from eventfleet.worker.effects import Effects
from eventfleet.worker.model import values
from eventfleet.worker.owned import Owned
from eventfleet.worker.shardio import ShardWrite


def may_defer(o: Owned, entries: Sized, batch_size: int, defer_s: float) -> bool:
    """Whether ``o``'s batch of ``entries`` may leave its model write for later: the read
    came back full (``o.count``, asked before the batch is applied) and the oldest deferred
    batch is younger than ``defer_s``."""
    if defer_s <= 0 or len(entries) < o.count(batch_size):
        return False
    return o.pending is None or time.monotonic() - o.pending_since < defer_s


def flush_writes(shards: Iterable[Owned]) -> list[ShardWrite]:
    """A write of the deferred model fields of each of ``shards`` that has some (nothing to
    ack), at its state now."""
    out = []
    for o in shards:
        if o.pending is None:
            continue
        fx = Effects()
        fx.model = values(o.state, o.pending)
        o.pending = None
        out.append(ShardWrite(o, fx, [], o.state.last_id))
    return out
