"""The windowed part of dedup: what a shard remembers about producers, idempotency keys and
order ids, for how long, and when it forgets.

Time here is never a clock: it is the millisecond part of the id of the entry being applied
(Redis gave it when the entry was appended, and a stream's ids only grow), so every fold of
the same log remembers and forgets the same things at the same entries, and replay stays
deterministic.

Three things are remembered with the time they were last heard of:

- a producer source (``p:...``): its watermark holds while the source was heard within the
  window; a source silent for longer is forgotten, and its next entry is applied whatever its
  seq (a retry older than the window takes effect again). Shard sources (``u<n>``, ``i<n>``)
  are never forgotten: there are few of them and they never stop counting;
- an idempotency key (topup, add_item): a second event with the key within the window of the
  first one is dropped;
- an order (user shards; ``eventfleet.ledger.shards.order_key``: the user and the order id): the
first
  charge or reject decides the order; another one of the same user with the same id within the
  window is a duplicate.

What the window let go is removed from the state at most a quarter window after it expired
(``prune``), so the state holds what was heard in the last 1.25 windows, whatever the history.
Whether something counts as remembered does not depend on when it was pruned: the checks
compare times themselves.

The watermark check (producer sources start with ``p``; shard sources are shard names) is
written out in ``eventfleet.ledger.rules._step_wire``, the hot path, where a function call is a
measurable share of a step (docs/PERFORMANCE.md); the other checks are below.
"""

from __future__ import annotations

from eventfleet.ledger.state import ShardState


def entry_ms(entry_id: str) -> int:
    """The millisecond part of a stream entry id (``<ms>-<n>``); 0 when it has none."""
    try:
        return int(entry_id.partition("-")[0])
    except ValueError:
        return 0


def key_taken(state: ShardState, key: str, now: int, window: int) -> bool:
    """Whether an event with idempotency ``key`` took effect within the window."""
    at = state.keys.get(key)
    return at is not None and now - at <= window


def first_decision(state: ShardState, order: str, now: int, window: int) -> bool | None:
    """How the order (``eventfleet.ledger.shards.order_key``) was decided within the window (True:
    confirmed), or None."""
    seen = state.orders.get(order)
    if seen is None or now - seen[0] > window:
        return None
    return seen[1]


def prune(state: ShardState, now: int, window: int) -> None:
    """Forget what was last heard more than ``window`` before ``now``; schedule the next."""
    horizon = now - window
    for source in [s for s, t in state.seen.items() if t < horizon]:
        del state.seen[source]
        state.watermarks.pop(source, None)
        if state.fwd:  # its forwarded paths go with it (eventfleet.ledger.split)
            state.fwd.pop(source, None)
    for key in [k for k, t in state.keys.items() if t < horizon]:
        del state.keys[key]
    for oid in [o for o, (t, _) in state.orders.items() if t < horizon]:
        del state.orders[oid]
    state.prune_at = now + max(1, window // 4)
