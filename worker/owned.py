"""A shard this worker holds: its lease token, its state, and its read position."""

from __future__ import annotations

from dataclasses import dataclass

from ledger.state import ShardState


@dataclass
class Owned:
    name: str
    epoch: int
    token: str
    state: ShardState
    deadline: float
    """Monotonic time until which the lease is surely ours (renewal sent before it + TTL)."""
    next_snapshot: float
    snapshot_wall: float
    """Wall-clock time of the last snapshot (for the age gauge)."""
    resync: bool = False
    """After a read whose reply was lost: re-read our own pending entries before ``>``."""
    cursor: str = "0"

    @property
    def family(self) -> str:
        return self.name[0]
