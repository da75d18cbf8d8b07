"""Order waiters during a chaos run: clients that place an order and wait for its outcome
(``client.order(..., wait=...)``, what ``eventfleet produce order --wait`` does), while the
faults strike and the counts grow; then every order one was told is confirmed is held to the
log and the read model: it must stay confirmed.

The orders are for the seeded workload's users and items (``sku-<n>``, added by the
workload: an order for one not added yet is rejected as unknown, which is an answer too).
A wait that times out or fails is counted, not retried: the order stands as published, and
only what a client was told is checked (a confirmed order must stay confirmed, and a rejected
one rejected).
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from eventfleet.chaos.readers import ClientLoops
from eventfleet.client import Client, EventfleetError, Receipt, WaitTimeout
from eventfleet.ops.verify import Report

WAIT_S = 30.0


@dataclass(frozen=True)
class Told:
    user: int
    order_id: str
    status: str
    took_s: float = 0.0


@dataclass
class OrderCheck:
    told: int = 0
    confirmed: int = 0
    wrong: list[str] = field(default_factory=list)
    timed_out_decided: int = 0
    """Waits that timed out for an order the logs decided (a liveness figure, not a verdict:
    the order stands as decided)."""


class OrderWaiters(ClientLoops):
    """``n`` loops of order-and-wait, one client each, until ``stop`` is set."""

    def __init__(
        self, connect: Callable[[], Client], users: int, items: int, n: int, seed: int
    ) -> None:
        super().__init__("chaos-order-waiters", connect, n, seed)
        self.users = users
        self.items = items
        self.tag = uuid.uuid4().hex[:6]
        self.told: list[Told] = []
        self.failures: list[str] = []
        """The first few calls that raised, why."""
        self.timed_out: list[tuple[int, str]] = []
        """(user, order id) of each wait that timed out."""
        self.placed: list[Receipt] = []
        """The receipt of every order published (told or not)."""

    def loop(self, client: Client, rng: random.Random, i: int) -> None:
        k = 0
        while not self.stop.is_set():
            k += 1
            user, oid = rng.randint(1, self.users), f"w-{self.tag}-{i}-{k}"
            item = f"sku-{rng.randrange(self.items)}"
            t0 = time.monotonic()
            try:
                res = client.order(
                    user, item, 1, order_id=oid, wait=WAIT_S, on_published=self.placed.append
                )
            except EventfleetError as exc:  # a wait timed out or Redis restarted: not told
                if isinstance(exc, WaitTimeout):
                    self.timed_out.append((user, oid))
                if len(self.failures) < 10:
                    self.failures.append(f"{oid} after {time.monotonic() - t0:.1f}s: {exc}"[:300])
                self.failed()
                continue
            with self._lock:
                self.told.append(Told(user, oid, res.status, time.monotonic() - t0))


def check_orders(
    result: Report,
    told: list[Told],
    status_now: dict[str, str | None],
    timed_out: Sequence[tuple[int, str]] = (),
) -> OrderCheck:
    """Every order a waiter was told is confirmed (or rejected): decided exactly once in the
    fold of the logs, so, and so in the read model now (``status_now``: order id -> what
    ``client.order_status`` reads). And how many of the waits that timed out (``timed_out``)
    were for an order the logs decided."""
    out = OrderCheck(told=len(told))
    decided: dict[tuple[int, str], list[str]] = {}
    for fold in result.folds.values():
        for rec in fold.outcomes:
            o = rec.outcome
            decided.setdefault((o.user_id, o.order_id), []).append(rec.status)
    out.timed_out_decided = sum(1 for key in timed_out if decided.get(key))
    for t in told:
        out.confirmed += t.status == "confirmed"
        got = decided.get((t.user, t.order_id), [])
        if got != [t.status]:
            out.wrong.append(f"order {t.order_id} of user {t.user}: told {t.status}, log {got}")
        elif status_now.get(t.order_id) != t.status:
            out.wrong.append(
                f"order {t.order_id} of user {t.user}: told {t.status}, read model "
                f"{status_now.get(t.order_id)!r}"
            )
    return out
