"""Running an online reshard's steps through a Redis failover or restart
(docs/DESIGN-DECISIONS.md, section 35): the command's policy, apart from the steps
themselves (``eventfleet/ops/reshard_online.py``). Workers and producers ride out the same
failover with ``eventfleet.store.retry``; a reshard is run again from its start instead,
which every step being idempotent makes the same as retrying the one that failed."""

from __future__ import annotations

import time

from eventfleet.ops.reshard_online import Grown, LeaseLost, ReshardBusy, Run, Say, grow, quiet
from eventfleet.store.errors import TRANSIENT, classify

RIDE_S = 30.0
"""How long ``ride_out`` retries a run whose Redis does not answer (a failover, a restart)
without the run getting any further."""


def ride_out(
    run: Run, users: int, items: int, wait_s: float, say: Say = quiet, ride_s: float = RIDE_S
) -> Grown:
    """``grow``, run again from its start while Redis does not answer (every step is
    idempotent: it continues where it stopped), for up to ``ride_s`` without a step
    completing; the lease taken again when it was lost and no other run holds it (a failover
    that did not replicate it, say: ``ReshardBusy`` otherwise). The seeds are waited for
    ``wait_s`` in all."""
    end = time.monotonic() + wait_s
    failing_since: float | None = None
    while True:
        moved = False

        def heard(line: str) -> None:
            nonlocal moved
            moved = True
            say(line)

        try:
            return grow(run, users, items, max(0.0, end - time.monotonic()), heard)
        except TRANSIENT as exc:
            if classify(exc) is not None:
                raise
            why = type(exc).__name__
        except LeaseLost:
            why = "its lease was gone"
            try:
                run.token = ""
                run.take()  # held by another run: ReshardBusy
            except TRANSIENT as exc:  # still failing over: the next round takes it
                if classify(exc) is not None:
                    raise
        now = time.monotonic()
        failing_since = now if moved or failing_since is None else failing_since
        if now - failing_since >= ride_s:
            raise ReshardBusy(
                f"Redis did not answer for {ride_s:g} s ({why}): the run stays recorded; "
                "re-run the same command to go on"
            )
        say(f"{why}: going on where the run stopped (for up to {ride_s:g} s without progress)")
        time.sleep(0.5)
