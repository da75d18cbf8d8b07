"""A bulk publish's events as text before they are stamped: what lets the asyncio client check
every event before the first is sent without holding every event's model meanwhile.

``prepared`` validates each event, notes its shard and serialises it without the envelope
(``source``, ``seq``, ``key``), then lets the model go: a 200,000-event publish holds two
lists of strings, which the garbage collector never scans, instead of 200,000 pydantic
models, which made it run about 900 times (gen 2 among them) during the publish and took a
quarter of its time. ``Envelope.pushes`` then stamps a chunk under the client's send lock with
a string splice per event instead of a model's serialisation. The text is byte for byte what
``eventfleet.ledger.codec.encode`` gives for the same event, source and seq
(``tests/test_client_texts.py``), and the seqs are the ``Stamper``'s own, so a later
``publish`` on the same client numbers on from them.

>>> from eventfleet.ledger.shards import ShardCounts
>>> shards, bodies = prepared([{"type": "topup", "user_id": 3, "amount": 5}], ShardCounts(2, 2))
>>> shards, bodies
(['u1'], ['{"type":"topup","user_id":3,"amount":5}'])
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any, cast

from eventfleet.client.common import AnyEvent, event_of
from eventfleet.ledger.events import AddItem, Order, Topup
from eventfleet.ledger.shards import ShardCounts, destination, item_shard, user_shard
from eventfleet.producer.client import Stamper

_MODELS: frozenset[type[AnyEvent]] = frozenset({Topup, AddItem, Order})
_ENVELOPE = {"source", "seq", "key"}
"""The fields the stamp adds (``codec.encode`` leaves them out of the body)."""
_EXCLUDE: set[str] | None = {f for m in _MODELS for f in m.model_fields} & _ENVELOPE or None
"""Those of them a published event's model has: none (they forbid extra fields), so the
serialiser is asked to leave nothing out, which costs it about a third of its time."""


def body(event: AnyEvent) -> str:
    """``event``'s JSON without the envelope: ``model_dump_json`` without its keyword handling
    (by field name, as ``model_dump_json`` by default); a subclass of an event's model (fields
    of its own) the way ``codec.encode`` serialises it."""
    if type(event) not in _MODELS:
        return event.model_dump_json(exclude=_ENVELOPE)
    serializer = event.__pydantic_serializer__
    return serializer.to_json(event, exclude=_EXCLUDE, by_alias=False).decode()


def prepared(
    events: Iterable[AnyEvent | dict[str, Any]], counts: ShardCounts
) -> tuple[list[str], list[str]]:
    """Every event validated (``InvalidEvent`` for the first that is not): each one's
    destination shard and its JSON without the envelope, in order. ``destination`` is asked
    once per user (a top-up's shard) and item (an item's or an order's), not per event: a
    CRC32 of the id's text each time costs a sixth of the rest."""
    shards: list[str] = []
    bodies: list[str] = []
    users: dict[int, str] = {}
    items: dict[str, str] = {}
    for value in events:
        event = event_of(value)
        kind = type(event)
        if type(event) is Topup:
            uid = event.user_id
            shards.append(users.get(uid) or users.setdefault(uid, destination(event, counts)))
        elif kind is AddItem or kind is Order:
            iid = cast(AddItem | Order, event).item_id  # routed by its item
            shards.append(items.get(iid) or items.setdefault(iid, destination(event, counts)))
        else:  # a subclass of one
            shards.append(destination(event, counts))
        bodies.append(body(event))
    return shards, bodies


def rerouted(bodies: Sequence[str], counts: ShardCounts) -> list[str]:
    """Each prepared event's shard under ``counts``, read back from its text: when the client
    learns grown counts during a bulk publish, what it has not stamped yet goes where they say
    (never what it stamped: docs/DESIGN-DECISIONS.md section 35). Rare, so parsed, not kept.

    >>> rerouted(['{"type":"topup","user_id":3,"amount":5}'], ShardCounts(4, 2))
    ['u3']
    """
    users: dict[int, str] = {}
    items: dict[str, str] = {}
    shards: list[str] = []
    for text in bodies:
        fields = json.loads(text)
        if fields["type"] == "topup":  # a top-up's user; an item's or an order's item
            uid = fields["user_id"]
            shards.append(users.get(uid) or users.setdefault(uid, user_shard(uid, counts)))
        else:
            iid = fields["item_id"]
            shards.append(items.get(iid) or items.setdefault(iid, item_shard(iid, counts)))
    return shards


class Envelope:
    """Stamps prepared events as ``stamper`` would: its source, its seqs, its inboxes."""

    def __init__(self, stamper: Stamper) -> None:
        self.stamper = stamper
        self._infix = f',"source":{json.dumps(stamper.wire_source, ensure_ascii=False)},"seq":'

    def pushes(
        self,
        shards: Sequence[str],
        bodies: Sequence[str],
        numbers: Sequence[int] | None = None,
    ) -> list[tuple[str, list[str]]]:
        """The events stamped (the shard's next seq, or ``numbers``, which must grow per shard:
        ``ValueError`` otherwise) as one ``(inbox, texts)`` per inbox, in order within each
        (``producer.client.grouped`` of what ``Stamper.stamp`` gives)."""
        seq = self.stamper.seq
        infix = self._infix
        by_shard: dict[str, list[str]] = {}
        for i, shard in enumerate(shards):
            last = seq.get(shard, 0)
            if numbers is None:
                n = last + 1
            else:
                n = numbers[i]
                if n <= last:
                    raise ValueError(f"seq {n} after {last} for shard {shard}: seqs must grow")
            seq[shard] = n
            texts = by_shard.get(shard)
            if texts is None:
                texts = by_shard[shard] = []
            texts.append(f"{bodies[i][:-1]}{infix}{n}}}")
        inbox, identity = self.stamper.keys.inbox, self.stamper.identity
        return [(inbox(shard, identity), texts) for shard, texts in by_shard.items()]


__all__ = ["Envelope", "prepared", "rerouted"]
