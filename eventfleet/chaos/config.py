"""What a chaos run is asked to do (``ChaosConfig``), the fault kinds and the run's limits."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

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
}
RECOVERY_DEADLINE_S = 60.0
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
