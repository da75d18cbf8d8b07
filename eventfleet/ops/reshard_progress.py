"""How far a recorded online reshard has got (docs/DESIGN-DECISIONS.md, section 35), from
``NS:meta`` (``reshard_target``, ``reshard_from``, ``reshard_state``, ``reshard_begun_ms``)
and the new shards' seed snapshots: an old shard of a growing family has split once every
child of its own is seeded. Shared by ``eventfleet status`` (``progress``), the exporter
(``Recorded``, whose ``children`` it checks in its own pipeline) and the command
(``split_yet``, ``resume_from``); ``state`` (``holding_shard``, ``Holders``)."""

from __future__ import annotations

import json
from collections.abc import Callable, Collection
from dataclasses import dataclass, replace
from typing import Any

import redis

from eventfleet.ledger.shards import ShardCounts, item_shard, user_shard
from eventfleet.ledger.split import children, marker_text
from eventfleet.store.ids import text
from eventfleet.store.keys import Keys
from eventfleet.store.namespace import counts_of

SEED_DIGEST = "seed_sha1:"
"""Field ``seed_sha1:<child>`` of the run record (``run_key``): the SHA-1 (hex) of a child's
seed snapshot, recorded by the command as it finds the seed (``Run.note_seeds``), before the
child's own snapshots replace it: ``verify`` compares it with the seed its parent's fold
gives, even once the child's log is trimmed and its fold starts from a later snapshot."""
MARKER = "marker:"
"""Field ``marker:<users>,<items>:<shard>`` of the run record: the entry id of the split marker
the command appended to that shard's log for that target, so a re-run finds it without
reading the log."""


def run_key(keys: Keys) -> str:
    """The online reshards' own record (a hash: ``SEED_DIGEST`` and ``MARKER`` fields), apart
    from ``NS:meta``, which workers and producers read whole and often; in the meta hash's
    slot (its tag), so the fenced script writes it with the lease checked on Redis Cluster
    too."""
    return f"{keys.ns}:{{{keys.meta}}}:reshard"


PREPARING, MARKED, PUBLISHED, DONE = "preparing", "marked", "published", "done"
"""``reshard_state`` in meta, in the order a run goes through them."""
STATES = (PREPARING, MARKED, PUBLISHED, DONE)


@dataclass(frozen=True)
class Recorded:
    """A reshard recorded in meta: its target, the counts it grows from, its state."""

    users: int
    items: int
    old: ShardCounts
    state: str
    begun_ms: int | None

    @property
    def running(self) -> bool:
        return self.state != DONE

    def children(self) -> dict[str, list[str]]:
        """Old shard -> its new children (itself left out), for the families that grow."""
        out: dict[str, list[str]] = {}
        for shard in self.old.all_shards():
            before, after = (
                (self.old.users, self.users) if shard[0] == "u" else (self.old.items, self.items)
            )
            kids = children(shard, before, after)[1:]
            if kids:
                out[shard] = kids
        return out

    def split_waiting(self, seeded: Collection[str]) -> tuple[list[str], list[str]]:
        """The old shards that have split (every child in ``seeded``) and those waited for."""
        split: list[str] = []
        waiting: list[str] = []
        for shard, kids in self.children().items():
            (split if all(k in seeded for k in kids) else waiting).append(shard)
        return split, waiting


def seed_digests(record: Any) -> dict[str, str]:
    """Child -> its seed's SHA-1 as recorded in ``record`` (``HGETALL`` of ``run_key``)."""
    prefix = SEED_DIGEST.encode()
    return {k[len(prefix) :].decode(): text(v) for k, v in record.items() if k.startswith(prefix)}


def is_seed(raw: bytes) -> bool:
    """Whether a snapshot's bytes are a seed as its parent's owner writes it (at the child's
    log position ``0-0`` and with no time taken: a worker's own snapshots carry theirs)."""
    try:
        doc = json.loads(raw)
    except ValueError:
        return False
    return isinstance(doc, dict) and doc.get("last_id") == "0-0" and doc.get("taken_ms") == 0


def recorded(meta: Any, keys: Keys) -> Recorded | None:
    """The reshard recorded in ``meta`` (``HGETALL``'s reply), None if none ever was; raises
    ``ValueError`` on fields that do not parse."""
    target = text(meta.get(b"reshard_target") or b"")
    if not target:
        return None
    state = text(meta.get(b"reshard_state") or b"")
    if state not in STATES:
        raise ValueError(f"reshard_state is {state!r}")
    users, _, items = target.partition(",")
    begun = meta.get(b"reshard_begun_ms")
    return Recorded(
        int(users),
        int(items),
        resume_from(meta, keys, int(users), int(items)),
        state,
        None if begun is None else int(begun),
    )


def progress(r: redis.Redis, keys: Keys) -> dict[str, Any] | None:
    """What ``eventfleet status`` shows of a reshard recorded in meta (None: none ever was):
    its target, the counts it grows from, its state, and which old shards of a growing family
    have split (every child of theirs seeded) and which are still waited for; and, only when
    there are, the waiting ones whose owner dead-lettered the run's marker (``dead_markers``:
    one ``XRANGE`` of each waiting parent's dead letters)."""
    rec = recorded(r.hgetall(keys.meta), keys)
    if rec is None:
        return None
    target = f"{rec.users},{rec.items}"
    if not rec.running:
        return {"target": target, "state": rec.state, "split": [], "waiting": []}
    kids = [k for ks in rec.children().values() for k in ks]
    pipe = r.pipeline(transaction=False)
    for k in kids:
        pipe.exists(keys.snapshot(k))
    seeded = {k for k, there in zip(kids, pipe.execute(), strict=True) if there}
    split, waiting = rec.split_waiting(seeded)
    frm = f"{rec.old.users},{rec.old.items}"
    doc = {"target": target, "from": frm, "state": rec.state, "split": split, "waiting": waiting}
    marker = marker_text(rec.users, rec.items)
    dead = [s for s in waiting if dead_markers(r, keys, s, marker, rec.begun_ms or 0)]
    if dead:  # a worker of an older version owns them: it will never split them
        doc["dead_lettered"] = dead
    return doc


def split_yet(
    r: redis.Redis, keys: Keys, shard: str, old: ShardCounts, users: int, items: int
) -> bool | None:
    """Whether ``shard`` (of ``old``) has split for ``users`` and ``items``: every child of
    it seeded. None when its family does not grow (no child tells)."""
    before, after = (old.users, users) if shard[0] == "u" else (old.items, items)
    kids = children(shard, before, after)[1:]
    if not kids:
        return None
    return all(r.exists(keys.snapshot(k)) for k in kids)


def resume_from(meta: Any, keys: Keys, users: int, items: int) -> ShardCounts:
    """The counts a run to ``users`` and ``items`` grows from: those it recorded when a run to
    that target is unfinished (its counts may be published already), else the current ones."""
    counts = counts_of(meta, keys)
    recorded_from = text(meta.get(b"reshard_from") or b"")
    if (
        recorded_from
        and text(meta.get(b"reshard_target") or b"") == f"{users},{items}"
        and text(meta.get(b"reshard_state") or b"") not in ("", DONE)
    ):
        u, _, i = recorded_from.partition(",")
        return ShardCounts(int(u), int(i), counts.window_ms, counts.orders_per_user)
    return counts


def holding_shard(
    r: redis.Redis, keys: Keys, counts: ShardCounts, shard_of: Callable[[ShardCounts], str]
) -> str:
    """The shard that holds a key now (``shard_of`` names it under given counts): under the
    published ``counts``, or, while a recorded reshard runs, under its target once that
    shard's seed snapshot exists (its parent applied the split marker and the key moved
    there; the counts are published only after every seed exists)."""
    here = shard_of(counts)
    try:
        rec = recorded(r.hgetall(keys.meta), keys)
    except ValueError:  # fields that do not parse: the published counts
        return here
    if rec is None or not rec.running:
        return here
    there = shard_of(replace(counts, users=rec.users, items=rec.items))
    if there != here and r.exists(keys.snapshot(there)):
        return there
    return here


@dataclass(frozen=True)
class Holders:
    """Which shard holds a key now, for a read of every shard (``state all``): under the
    published ``counts``, or, while a recorded reshard runs, under its ``target`` once that
    shard is one of the ``seeded`` new shards (its parent applied the marker and dropped the
    key). ``shards``: what to read, the published shards then the seeded new ones."""

    counts: ShardCounts
    target: ShardCounts
    seeded: frozenset[str]

    @property
    def shards(self) -> list[str]:
        have = set(self.counts.all_shards())
        grown = [s for s in self.target.all_shards() if s not in have and s in self.seeded]
        return self.counts.all_shards() + grown

    def holder(self, shard_of: Callable[[ShardCounts], str]) -> str:
        there = shard_of(self.target)
        return there if there in self.seeded else shard_of(self.counts)

    def of_user(self, user_id: int) -> str:
        return self.holder(lambda c: user_shard(user_id, c))

    def of_item(self, item_id: str) -> str:
        return self.holder(lambda c: item_shard(item_id, c))


def holders(r: redis.Redis, keys: Keys, counts: ShardCounts) -> Holders:
    """``Holders`` as of now: one ``HGETALL`` and, while a reshard runs, an ``EXISTS`` per new
    shard of its target (fields that do not parse: the published counts alone)."""
    try:
        rec = recorded(r.hgetall(keys.meta), keys)
    except ValueError:
        rec = None
    if rec is None or not rec.running:
        return Holders(counts, counts, frozenset())
    target = replace(counts, users=rec.users, items=rec.items)
    have = set(counts.all_shards())
    new = [s for s in target.all_shards() if s not in have]
    pipe = r.pipeline(transaction=False)
    for s in new:
        pipe.exists(keys.snapshot(s))
    seeded = frozenset(s for s, there in zip(new, pipe.execute(), strict=True) if there)
    return Holders(counts, target, seeded)


def dead_markers(r: redis.Redis, keys: Keys, shard: str, text_: str, since_ms: int) -> set[str]:
    """The entry ids of split markers ``text_`` that ``shard``'s owner dead-lettered since
    ``since_ms`` (``unknown_type``: a worker of a version that does not apply markers owned
    it). One ``XRANGE`` of the shard's dead letters (few, as a rule)."""
    want, start, out = text_.encode(), f"{since_ms}-0", set()
    while True:
        got: Any = r.xrange(keys.dlq(shard), min=start, count=1000)
        for _eid, f in got:
            if f.get(b"reason") == b"unknown_type" and f.get(b"raw") == want:
                out.add(text(f.get(b"entry_id") or b""))
        if len(got) < 1000:
            return out
        start = f"({text(got[-1][0])}"
