"""What a chaos run is asked to do (``ChaosConfig``), the fault kinds and the run's limits."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from eventfleet.ledger.split import growth_error

KINDS = ("kill", "pause", "scale", "redis_restart", "client_kill", "producer_rerun", "hostile")
DEFAULT_KINDS = ("kill", "pause", "scale", "redis_restart", "producer_rerun", "hostile")
PRODUCER_NAME = "chaos-producer"
# A first guess of how long one fault and its recovery take, before any was measured.
GUESS_S = {
    "kill": 3.0,
    "pause": 3.0,
    "scale": 6.0,
    "redis_restart": 3.0,
    "client_kill": 1.5,
    "producer_rerun": 3.0,
    "hostile": 1.5,
    "reshard": 40.0,
}
RECOVERY_DEADLINE_S = 60.0
RESHARD_KINDS = ("kill", "pause", "redis_restart")
"""The faults struck while each ``--reshard`` step runs (each at least once)."""
POLL_S = 0.02
BACKLOG_CAP = 1000


class ChaosError(RuntimeError):
    """The run could not be carried out (not a verdict on the system under test)."""


@dataclass
class ChaosConfig:
    workers: int = 3
    events: int = 10_000
    seed: int = 1
    faults: tuple[str, ...] = DEFAULT_KINDS
    rounds: int = 3
    """Each round injects every chosen kind once, in a seeded random order."""
    fault_interval: float = 1.0
    """Seconds between one fault's recovery and the next fault."""
    redis_url: str | None = None
    namespace: str | None = None
    user_shards: int = 8
    item_shards: int = 8
    lease_ttl_ms: int = 1500
    snapshot_interval_s: float = 2.0
    max_rate: float = 3000.0
    idle_timeout_s: float = 300.0
    readers: int = 2
    """Clients writing a top-up and reading the balance back with the receipt throughout."""
    logdir: Path | None = None
    reshard: tuple[tuple[int, int], ...] = ()
    """Online growths run one after the other under the load, ``(users, items)`` each
    (``--reshard 8x8,16x16``); the faults of ``RESHARD_KINDS`` strike while each runs."""
    reshard_wait_s: float = 120.0
    """How long one run of the reshard command waits for the workers to seed the new shards
    before it exits (it is then run again)."""
    order_waiters: int = 2
    """Clients that place orders and wait for their outcome (``client.order(wait=...)``, as
    ``produce order --wait`` does); a confirmed order must stay confirmed."""


def parse_reshard(text: str, users: int, items: int) -> tuple[tuple[int, int], ...]:
    """``UxI[,UxI...]``: each step's user and item counts, each a multiple of the previous
    step's (the first: of the namespace's ``users`` and ``items``) and larger in at least one
    family. ``ChaosError`` with what is wrong."""
    steps: list[tuple[int, int]] = []
    before = (users, items)
    for part in (p.strip() for p in text.split(",")):
        u, sep, i = part.lower().partition("x")
        if not sep or not u.strip().isdigit() or not i.strip().isdigit():
            raise ChaosError(
                f"--reshard {text!r}: each step is USERSxITEMS, e.g. 8x8,16x16 (got {part!r})"
            )
        step = (int(u), int(i))
        problems = [
            e
            for e in (
                growth_error(before[0], step[0], "user") if step[0] else "0 user shards",
                growth_error(before[1], step[1], "item") if step[1] else "0 item shards",
            )
            if e
        ]
        if not problems and step == before:
            problems.append(f"{part} grows nothing after {before[0]}x{before[1]}")
        if problems:
            raise ChaosError(
                f"--reshard {text!r}: step {part} after {before[0]}x{before[1]}: "
                + "; ".join(problems)
            )
        steps.append(step)
        before = step
    return tuple(steps)
