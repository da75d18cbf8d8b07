"""What stepping an entry gives: the results of ``eventfleet.ledger.rules.step`` and what they
carry (emitted events, outcome records, dead letters; forwards and seeds after a split,
``eventfleet.ledger.split``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from eventfleet.ledger.codec import Wire, bounded, bounded_text, decode_outcome
from eventfleet.ledger.events import OrderOutcome
from eventfleet.ledger.state import ShardState

DLQ = "dlq"

DEAD_LETTER_REASONS = (
    "bad_entry",
    "too_large",
    "bad_json",
    "unknown_type",
    "invalid_event",
    "forged_internal",
    "forged_source",
    "wrong_shard",
    "balance_overflow",
    "stock_overflow",
    "unknown_item",
    "handler_error",
    "max_deliveries",
)
"""Every reason a dead letter can give (ledger.codec, ``eventfleet.ledger.rules.step``, and the
poison skip of entries delivered too often): the bounded label set of the dead-letter metrics."""


FORGED = frozenset({"forged_internal", "forged_source"})
"""Reasons of entries from a shard's inbox (what producers write) that claim to come from a
shard: an internal event type, or a shard's source name. Neither takes effect."""


@dataclass(slots=True)  # not frozen: a frozen dataclass' __init__ costs more (PERFORMANCE.md)
class Emit:
    """An event for another shard's stream, already encoded with source and seq."""

    dest: str
    seq: int
    text: str


@dataclass(slots=True)
class OutcomeRecord:
    """An order's outcome record: its seq in the user shard's outcome stream and its JSON
    (``eventfleet.ledger.codec.outcome_text``), with the status and reason the metrics count."""

    seq: int
    text: str
    status: str
    reason: str | None

    @property
    def outcome(self) -> OrderOutcome:
        """The record as the model (read tools; the worker writes the text)."""
        return decode_outcome(self.text)


@dataclass(frozen=True, slots=True)
class DeadLetter:
    seq: int
    shard: str
    entry_id: str
    reason: str
    error: str
    raw: str


@dataclass(slots=True)
class StepResult:
    kind: Literal["applied", "duplicate", "dead", "forwarded", "split"]
    event_type: str | None = None
    by_key: bool = False
    """A duplicate dropped for its idempotency key (its own seq was new, and is consumed)."""
    emits: Sequence[Emit] = ()
    outcomes: Sequence[OutcomeRecord] = ()
    dead: DeadLetter | None = None
    wire: Wire | None = None
    """The decoded entry, when it decoded (read tools use it instead of parsing again)."""


@dataclass(slots=True)
class Forward:
    """An entry a split shard hands on to the child that owns its key: the event's text as
    it arrived, its producer scope (``by``), and the path (the shards it passed through)."""

    dest: str
    path: str
    text: bytes | str
    scope: str


@dataclass(slots=True)
class ForwardResult(StepResult):
    """``kind == "forwarded"``: the entry was not applied here but is to be forwarded."""

    forward: Forward | None = None


@dataclass(slots=True)
class SplitResult(StepResult):
    """``kind == "split"``: a split marker was applied; ``seeds`` are the new children's
    states (the shard's own state is already what it keeps)."""

    seeds: dict[str, ShardState] = field(default_factory=dict)


def dead_letter(
    state: ShardState, entry_id: str, raw: bytes | str, reason: str, error: str
) -> StepResult:
    state.last_id = entry_id
    letter = DeadLetter(
        state.next_seq(DLQ), state.shard, entry_id, reason, bounded(error), bounded_text(raw)
    )
    return StepResult("dead", None, dead=letter)
