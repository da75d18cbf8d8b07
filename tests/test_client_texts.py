"""The asyncio client's bulk publish stamps prepared text (``eventfleet.client.texts``): what it
sends is byte for byte what ``Stamper.stamp`` (``codec.encode``) makes of the same events, with
the same shards, inboxes and seqs, and the same refusal of seqs that do not grow."""

from __future__ import annotations

import pytest

from eventfleet.client.errors import InvalidEvent
from eventfleet.client.texts import Envelope, prepared
from eventfleet.ledger.events import AddItem, Order, Topup
from eventfleet.ledger.shards import ShardCounts, destination
from eventfleet.producer.client import Stamper, grouped
from eventfleet.producer.workload import mixed
from eventfleet.store.keys import Keys

COUNTS = ShardCounts(16, 16)
KEYS = Keys("texts")


def _events() -> list[Topup | AddItem | Order]:
    return [*mixed(3_000, seed=3, users=500, items=40), Topup(user_id=2**40, amount=1)]


@pytest.mark.parametrize("identity", [None, "shop"])
@pytest.mark.parametrize("source", [None, "p:nightly-2026.12.07:a_b"])
def test_stamped_text_is_what_the_stamper_makes(identity: str | None, source: str | None) -> None:
    events = _events()
    rows = [e.model_dump(mode="json") for e in events]
    shards, bodies = prepared(rows, COUNTS)
    assert shards == [destination(e, COUNTS) for e in events]
    reference = Stamper(KEYS, COUNTS, source, identity)
    stamper = Stamper(KEYS, COUNTS, source, identity)
    stamper.wire_source = reference.wire_source  # the same anonymous source on both sides
    envelope = Envelope(stamper)
    for start in range(0, len(events), 700):  # chunks: the seqs go on from one to the next
        end = start + 700
        want = grouped([reference.stamp(e) for e in events[start:end]])
        assert envelope.pushes(shards[start:end], bodies[start:end]) == want
    assert stamper.seq == reference.seq


def test_own_numbers_must_grow_per_shard_as_the_stamper_says() -> None:
    events = [Topup(user_id=7, amount=1), Topup(user_id=7, amount=2), Topup(user_id=7, amount=3)]
    shards, bodies = prepared(events, COUNTS)
    reference = Stamper(KEYS, COUNTS, "p:own")
    want = grouped([reference.stamp(e, n) for e, n in zip(events, [2, 7, 9], strict=True)])
    assert Envelope(Stamper(KEYS, COUNTS, "p:own")).pushes(shards, bodies, [2, 7, 9]) == want
    with pytest.raises(ValueError) as got:
        Envelope(Stamper(KEYS, COUNTS, "p:own")).pushes(shards, bodies, [1, 1, 2])
    stamper = Stamper(KEYS, COUNTS, "p:own")
    stamper.stamp(events[0], 1)
    with pytest.raises(ValueError) as expected:
        stamper.stamp(events[1], 1)
    assert str(got.value) == str(expected.value)


def test_an_invalid_event_anywhere_refuses_the_whole_list() -> None:
    rows = [{"type": "topup", "user_id": 1, "amount": 1}] * 5 + [{"type": "charge"}]
    with pytest.raises(InvalidEvent):
        prepared(rows, COUNTS)
    with pytest.raises(InvalidEvent):
        prepared([{"type": "topup", "user_id": 1, "amount": 1, "seq": 4}], COUNTS)


class _Tagged(Topup):
    """An application's own subclass of an event's model, with a field of its own."""

    note: str = "from the shop"


def test_a_subclass_of_an_event_model_is_stamped_as_the_stamper_stamps_it() -> None:
    events: list[Topup | AddItem] = [
        _Tagged(user_id=5, amount=3),
        AddItem(item_id="sku-1", count=1, price=2),
    ]
    shards, bodies = prepared(events, COUNTS)
    assert shards == [destination(e, COUNTS) for e in events]
    reference = Stamper(KEYS, COUNTS, "p:sub")
    want = grouped([reference.stamp(e) for e in events])
    assert Envelope(Stamper(KEYS, COUNTS, "p:sub")).pushes(shards, bodies) == want
    assert '"note":"from the shop"' in want[0][1][0]
