"""A flooded inbox never makes one script long: the emitted-events script moves at most
INBOX_MOVE_LIMIT inbox elements before appending a batch's events."""

from __future__ import annotations

from typing import Any

import redis

from ledger.codec import encode
from ledger.events import Topup
from ledger.rules import Emit, StepResult
from store.keys import Keys
from tests.fleet_utils import setup_namespace
from worker.effects import queue_effects
from worker.scripts import INBOX_MOVE_LIMIT, Scripts


def test_emitted_events_move_a_bounded_part_of_a_flooded_inbox(
    r: redis.Redis, namespace: str
) -> None:
    setup_namespace(r, namespace)
    keys = Keys(namespace)
    flood = [encode(Topup(user_id=1, amount=1), "p:flood", s) for s in range(1, 2501)]
    for i in range(0, len(flood), 500):
        r.rpushx(keys.inbox("u0"), *flood[i : i + 500])  # type: ignore[arg-type]
    charge = '{"type":"release","order_id":"o","item_id":"x","qty":1,"source":"i0","seq":1}'
    res = StepResult("applied", "order", emits=[Emit("u0", 1, charge)])

    def write() -> None:
        pipe = r.pipeline(transaction=False)
        queue_effects(pipe, keys, Scripts.register(r), "i0", [res], [], "1-0")
        pipe.execute()

    write()
    log: Any = r.xrange(keys.events("u0"))
    assert len(log) == INBOX_MOVE_LIMIT + 1  # a bounded part of the inbox, then the event
    assert log[-1][1][b"event"] == charge.encode()
    assert int(r.llen(keys.inbox("u0"))) - 1 == len(flood) - INBOX_MOVE_LIMIT
    moved = [f[b"event"].decode() for _, f in log[:-1]]
    assert moved == flood[:INBOX_MOVE_LIMIT]  # in order, marked as the owner's move marks them
    assert all(f[b"via"] == b"inbox" for _, f in log[:-1])
