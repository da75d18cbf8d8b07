"""What a split shard writes besides its usual effects (docs/DESIGN-DECISIONS.md, section 35):
the entries it forwards to its children (``eventfleet.ledger.results.ForwardResult``) and
the children's seeds (``SplitResult``), each child's in one ``forward_once.lua`` call in the
child's slot, queued with the batch's other effects, before its ack.

Both are written at most once whoever writes them: a seed with ``SET NX`` (every replay of
the parent gives the same bytes), a forwarded entry only above the child's mark for its
parent's entry ids. So a batch written again after a lost reply, a zombie owner and a
takeover's replay write each the same thing, once. With its seed, each child gets the seed's
read-model fields (only while it has no snapshot: no owner of it can have written its model
yet), queued before the parent's model write that removes them from the parent's model, so a
key that moved always has a field in one of the two (docs/DESIGN-DECISIONS.md, section 35).

Collected only from results of kind ``forwarded`` and ``split``: a shard that never split
pays nothing here.
"""

from __future__ import annotations

import functools
from itertools import groupby
from typing import Any

from eventfleet.ledger.bundle import pack
from eventfleet.ledger.results import ForwardResult, SplitResult, StepResult
from eventfleet.ledger.rules import step_entry
from eventfleet.ledger.shards import ShardCounts
from eventfleet.ledger.state import ShardState
from eventfleet.store.keys import Keys, flat_entry_fwd
from eventfleet.worker.model import FULL_CHUNK, fields
from eventfleet.worker.scripts import Scripts

MOVED_KINDS = frozenset({"forwarded", "split"})
"""The result kinds ``Moved`` collects."""


class Moved:
    """A batch's forwards and seeds, per child, and the read-model fields that moved."""

    __slots__ = ("forwards", "models", "removed", "seeds")

    def __init__(self) -> None:
        self.forwards: dict[str, list[tuple[str, str, str, str]]] = {}
        """Child -> (parent entry id, path, scope, event text) per forwarded event, in order."""
        self.seeds: dict[str, bytes] = {}
        """Child -> its seed snapshot."""
        self.models: dict[str, list[str]] = {}
        """Child -> its seed's read-model fields, flat field/value pairs."""
        self.removed: list[str] = []
        """The parent's read-model fields of the keys its children took."""

    def add(self, res: StepResult, entry_id: str, state: ShardState) -> None:
        """Note a ``forwarded`` or ``split`` result of the entry ``entry_id`` of ``state``."""
        if isinstance(res, ForwardResult) and res.forward is not None:
            f = res.forward
            text = f.text.decode() if isinstance(f.text, bytes) else f.text
            self.forwards.setdefault(f.dest, []).append((entry_id, f.path, f.scope, text))
        elif isinstance(res, SplitResult):
            for child, seed in res.seeds.items():
                self.seeds[child] = seed.to_snapshot()
                self.models[child] = [x for kv in fields(seed).items() for x in kv]
                self.removed += (f"b:{u}" for u in seed.balances)
                self.removed += (f"i:{i}" for i in seed.items)
                self.removed += (f"o:{o}" for o in seed.orders if o not in state.orders)

    def records(self, child: str) -> list[str]:
        """The flat records of ``forward_once.lua`` for ``child``: one entry per (parent
        entry, path, scope), its events packed into bundles (``eventfleet.ledger.bundle``)."""
        out: list[str] = []
        for (eid, path, scope), group in groupby(self.forwards.get(child, ()), key=lambda f: f[:3]):
            for text in pack([f[3] for f in group]):
                out += (eid, path, scope, text)
        return out


def step_splitting(
    state: ShardState,
    eid: str,
    raw: bytes | None,
    counts: ShardCounts,
    via_inbox: bool,
    by: str,
    flat: list[Any],
) -> list[StepResult]:
    """``step_entry`` of an entry with split markers applying, and on its forwarding path
    (field ``fwd``) when it has one: only a shard born of a split is sent forwarded entries,
    so only such a shard looks for the field."""
    fwd = flat_entry_fwd(flat) if state.splits else ""
    return step_entry(state, eid, raw, counts, from_inbox=via_inbox, scope=by, fwd=fwd, splits=True)


def note(moved: Moved | None, res: StepResult, entry_id: str, state: ShardState) -> Moved:
    """``moved`` (a new one when None) with ``res`` noted."""
    if moved is None:
        moved = Moved()
    moved.add(res, entry_id, state)
    return moved


def queue_moved(pipe: Any, keys: Keys, scripts: Scripts, shard: str, moved: Moved) -> None:
    """Queue, on a pipeline, the seeds and forwards of ``shard``'s batch: one script call per
    child, in the child's slot (a seed's read model in slices of ``FULL_CHUNK`` fields, each
    a call of its own before the last, which sets the seed: each run stays short)."""
    for child in dict.fromkeys([*moved.seeds, *moved.forwards]):
        pairs = moved.models.get(child, [])
        step = 2 * FULL_CHUNK
        head = max(0, (len(pairs) - 1) // step) * step  # the last slice goes with the seed
        call = functools.partial(
            scripts.forward_once,
            pipe,
            events=keys.events(child),
            marks=keys.forwarded(child),
            snapshot=keys.snapshot(child),
            model=keys.model(child),
            sender=shard,
        )
        for i in range(0, head, step):
            call(seed=b"", pairs=pairs[i : i + step], records=[])
        call(seed=moved.seeds.get(child, b""), pairs=pairs[head:], records=moved.records(child))
