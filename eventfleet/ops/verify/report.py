"""The result of ``eventfleet verify``: each shard's fold and the findings, by kind."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from eventfleet.ledger.rules import DeadLetter, OutcomeRecord
from eventfleet.ledger.shards import ShardCounts
from eventfleet.ledger.state import ShardState

SHOWN = 5
"""Differing records shown per shard and kind of record; all of them are counted."""

KINDS = ("mismatch", "lost", "duplicate", "invariant")


@dataclass(frozen=True)
class Finding:
    kind: str
    shard: str
    what: str
    detail: str


@dataclass
class Findings:
    shown: list[Finding] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)
    per_place: Counter[tuple[str, str]] = field(default_factory=Counter)

    def add(self, kind: str, shard: str, what: str, detail: str) -> None:
        self.counts[kind] += 1
        self.per_place[(shard, what)] += 1
        if self.per_place[(shard, what)] <= SHOWN:
            self.shown.append(Finding(kind, shard, what, detail))


@dataclass
class ShardFold:
    """One shard's log folded, and what the fold saw on the way."""

    shard: str
    state: ShardState
    start_id: str
    """``0-0`` when folded from the first entry, else the snapshot id it started from."""
    floor: dict[str, int]
    """out_seq at the start: emitted records at or below these seqs were not recomputed."""
    base: dict[str, int]
    """Watermarks at the start: entries at or below them were applied before the fold."""
    entries: int = 0
    duplicates: int = 0
    snapshot: str = "none"
    emits: dict[str, list[str]] = field(default_factory=dict)
    outcomes: list[OutcomeRecord] = field(default_factory=list)
    dead: list[DeadLetter] = field(default_factory=list)
    received: dict[str, dict[int, str | int]] = field(default_factory=dict)
    """Per source, per seq: the entry text (internal sources) or its hash (producers)."""
    applied_seqs: dict[str, set[int]] = field(default_factory=dict)
    dead_seqs: dict[str, set[int]] = field(default_factory=dict)
    forwards: dict[str, Counter[tuple[str, str, str]]] = field(default_factory=dict)
    """Per child, the (path, scope, text) of each event the fold forwarded to it (a split
    shard's, docs/DESIGN-DECISIONS.md section 35)."""
    forwarded_in: dict[str, Counter[tuple[str, str, str]]] = field(default_factory=dict)
    """Per sender (the last shard of an entry's ``fwd`` path), the (path, scope, text) of each
    forwarded event the log holds."""
    seeds: dict[str, ShardState] = field(default_factory=dict)
    """The seeds the fold's split markers gave, per child."""
    forward_last: dict[str, str] = field(default_factory=dict)
    """Per child, the last of this shard's entry ids the fold forwarded to it: where the
    child's forwarded mark for this shard stands when its owner wrote what the log gives."""
    inbox_tails: dict[str, bytes | None] = field(default_factory=dict)
    """The inbox chains (``eventfleet/store/lua/move_inbox.lua``) at the fold's end, per inbox
    (the producer name, "" for the shared inbox): SHA-1 (hex) of the last element moved, None
    when the fold cannot tell."""
    topups: int = 0
    added: int = 0
    orders: Counter[tuple[int, str]] = field(default_factory=Counter)
    """Orders received, per (user, order id): an order is a user's order id."""

    @property
    def complete(self) -> bool:
        return self.start_id == "0-0"

    def applied_by(self, source: str) -> int:
        return len(self.applied_seqs.get(source, ()))


@dataclass
class Report:
    counts: ShardCounts
    folds: dict[str, ShardFold] = field(default_factory=dict)
    findings: Findings = field(default_factory=Findings)
    unchecked: list[str] = field(default_factory=list)
    quiescent: bool = True
    totals: dict[str, Any] = field(default_factory=dict)
    marks: dict[str, dict[str, str]] = field(default_factory=dict)
    """Per shard, its forwarded marks (``NS:{shard}:forwarded``: sender -> entry id), read
    while the fleet is idle (``check_forwards``)."""

    def count(self, kind: str) -> int:
        return self.findings.counts[kind]

    @property
    def ok(self) -> bool:
        return not any(self.findings.counts[k] for k in KINDS)

    def as_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "quiescent": self.quiescent,
            "mismatches": self.count("mismatch"),
            "lost": self.count("lost"),
            "duplicates_applied": self.count("duplicate"),
            "invariant_violations": self.count("invariant"),
            "shards": [
                {
                    "shard": f.shard,
                    "from": "first entry" if f.complete else f"snapshot {f.start_id}",
                    "entries": f.entries,
                    "applied": f.state.applied,
                    "duplicates_dropped": f.duplicates,
                    "dead_letters": len(f.dead),
                    "outcomes": len(f.outcomes),
                    "snapshot": f.snapshot,
                }
                for f in self.folds.values()
            ],
            "findings": [vars(f) for f in self.findings.shown],
            "unchecked": self.unchecked,
            "totals": self.totals,
        }


def is_shard(source: str) -> bool:
    return source[:1] in ("u", "i") and source[1:].isdigit()
