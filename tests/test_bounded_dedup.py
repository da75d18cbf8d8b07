"""Bounded dedup state under the shipped ACL: one-shot producers (each writes one entry and is
never heard of again) leave a snapshot sized by the dedup window, not by how many there were.

The admin appends the entries with explicit, time-shifted ids (one producer per millisecond
of entry time, starting in 2001): entry-id time is the only clock the window reads. The run
of a million is behind ``-m chaos``; the default run uses 150,000."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from eventfleet.ledger.codec import encode
from eventfleet.ledger.events import Topup
from eventfleet.local.fleet import LocalFleet
from tests.acl_stack import AclStack
from tests.secure_redis import connect

WINDOW_S = 10
START_MS = 1_000_000_000_000
STREAM = "eventfleet:{u0}:events"


def _one_shot_producers(stack: AclStack, n: int) -> None:
    admin = stack.client("admin")
    head, tail = encode(Topup(user_id=1, amount=1), "p:X", 1).split('"p:X"')
    for lo in range(0, n, 10_000):
        pipe = admin.pipeline(transaction=False)
        for k in range(lo, min(n, lo + 10_000)):
            pipe.xadd(STREAM, {"event": f'{head}"p:once-{k}"{tail}'}, id=f"{START_MS + k}-0")
        pipe.execute()


@pytest.mark.parametrize(
    "n", [150_000, pytest.param(1_000_000, marks=pytest.mark.chaos)], ids=["150k", "1M"]
)
def test_one_shot_producers_leave_a_window_sized_snapshot(
    port: int, tmp_path: Path, fleet_factory: list[LocalFleet], n: int
) -> None:
    stack = AclStack(port, tmp_path, fleet_factory)
    stack.init("--user-shards", "1", "--item-shards", "1", "--dedup-window", str(WINDOW_S))
    _one_shot_producers(stack, n)
    fleet = stack.workers(1)
    stack.idle()
    assert fleet.terminate(fleet.workers[0], timeout=120) == 0  # drains: a final snapshot
    raw = connect(port, "root", decode_responses=False).get("eventfleet:{u0}:snapshot")
    assert raw is not None
    snap = json.loads(raw)
    assert snap["users"] == [[1], [n]]
    sources = snap["seen"][0]
    bound = 1.25 * WINDOW_S * 1000 + 1  # one producer per ms, kept at most 1.25 windows
    assert len(sources) <= bound and len(snap["watermarks"]) <= bound
    assert min(snap["seen"][1]) >= START_MS + n - 1 - bound
    assert len(raw) < 70 * bound  # about 50 bytes per producer kept, whatever n was
