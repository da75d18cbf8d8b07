"""A shard this worker holds: its lease token, its state, and its read position."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from eventfleet.ledger.bundle import MAX_EVENTS, read_count
from eventfleet.ledger.state import ShardState
from eventfleet.worker.model import Changes


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
    per_entry: int = MAX_EVENTS
    """Events per entry in the last batch (bundles hold many: ``eventfleet.ledger.bundle``),
    rounded up;
    at first the most a bundle holds, so a first read of bundles is not a huge batch."""
    pending: Changes | None = None
    """What applied batches touched whose read-model write is deferred while the shard is
    behind (``eventfleet.worker.modeldefer``); written with a later batch's effects."""
    pending_since: float = 0.0
    """Monotonic time of the oldest deferred batch."""

    @property
    def family(self) -> str:
        return self.name[0]

    @property
    def read_from(self) -> str:
        """Where the next group read starts: ``>`` (new entries), or while resyncing, the
        next of our own pending entries."""
        return self.cursor if self.resync else ">"

    def resync_from_start(self) -> None:
        """A read's reply was lost: entries may sit in our pending list unseen. The next reads
        walk our pending entries from the first before reading new ones."""
        self.resync, self.cursor = True, "0"

    def resync_past(self, entry_id: str) -> None:
        """While resyncing, the pending entries up to ``entry_id`` are in hand."""
        self.cursor = entry_id

    def count(self, batch_size: int) -> int:
        """How many entries the next read asks for: about ``batch_size`` events."""
        return read_count(batch_size, self.per_entry)

    def resync_done(self) -> None:
        """No pending entries of ours are left: read new entries (``>``) again."""
        self.resync, self.cursor = False, ">"


def earliest_deadline(shards: Iterable[Owned]) -> float:
    """When the first of these leases may run out: the bound for a call that covers them."""
    return min(o.deadline for o in shards)
