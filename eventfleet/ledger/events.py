"""The events of the ledger, as frozen pydantic models with a discriminated union over ``type``.

External events are what producers publish; internal events are the two steps of the order
saga that shards send each other. On the wire each event is one flat JSON object with the
envelope fields ``source`` and ``seq`` beside the payload (see ``eventfleet.ledger.codec``).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, TypeAdapter

MAX_INT = 2**53 - 1
"""Largest amount, count, price or id we accept: every JSON reader can hold it exactly."""

UserId = Annotated[StrictInt, Field(gt=0, le=MAX_INT)]
Key = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]
Positive = Annotated[StrictInt, Field(gt=0, le=MAX_INT)]
NonNegative = Annotated[StrictInt, Field(ge=0, le=MAX_INT)]
RejectReason = Literal["out_of_stock", "unknown_item", "amount_too_large"]
"""``amount_too_large``: price times quantity exceeds ``MAX_INT`` (the order cannot be paid)."""
OutcomeReason = Literal["out_of_stock", "unknown_item", "amount_too_large", "insufficient_funds"]
Decided = Literal["confirmed", "rejected"]
OutcomeStatus = Literal["confirmed", "rejected", "duplicate"]
Ref = Annotated[str, Field(min_length=1, max_length=160)]
"""Which published order a saga step or outcome answers: ``<source>/<seq>`` of the order."""


class _Event(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Topup(_Event):
    type: Literal["topup"] = "topup"
    user_id: UserId
    amount: Positive


class AddItem(_Event):
    type: Literal["add_item"] = "add_item"
    item_id: Key
    count: Positive
    price: NonNegative


class Order(_Event):
    type: Literal["order"] = "order"
    order_id: Key
    user_id: UserId
    item_id: Key
    qty: Positive


class Charge(_Event):
    """Item shard -> user shard: stock is reserved, take the money."""

    type: Literal["charge"] = "charge"
    order_id: Key
    user_id: UserId
    item_id: Key
    qty: Positive
    amount: NonNegative
    ref: Ref | None = None


class Release(_Event):
    """User shard -> item shard: the charge failed, put the stock back (compensation)."""

    type: Literal["release"] = "release"
    order_id: Key
    item_id: Key
    qty: Positive


class Reject(_Event):
    """Item shard -> user shard: the order failed at the item; record the outcome."""

    type: Literal["reject"] = "reject"
    order_id: Key
    user_id: UserId
    item_id: Key
    qty: Positive
    reason: RejectReason
    amount: NonNegative | None = None
    ref: Ref | None = None


ExternalEvent = Annotated[Topup | AddItem | Order, Field(discriminator="type")]
Event = Topup | AddItem | Order | Charge | Release | Reject
EVENT_TYPES: tuple[str, ...] = ("topup", "add_item", "order", "charge", "release", "reject")
EXTERNAL_TYPES: frozenset[str] = frozenset({"topup", "add_item", "order"})
"""What producers publish; the other types only shards emit to each other."""

EXTERNAL_ADAPTER: TypeAdapter[Topup | AddItem | Order] = TypeAdapter(ExternalEvent)


class OrderOutcome(_Event):
    """The one outcome of an order, written by the user's shard to its outcomes stream.

    An order whose ``order_id`` the user's shard decided before (within the dedup window)
    gets a record with status ``duplicate``: nothing was charged, its stock was released,
    and ``first`` says how the first order with that id was decided (which stands).
    """

    order_id: Key
    user_id: UserId
    item_id: Key
    qty: Positive
    amount: NonNegative | None
    status: OutcomeStatus
    reason: OutcomeReason | None
    first: Decided | None = None
    ref: Ref | None = None
    """The order entry this record answers (``produce order --wait`` looks for it)."""
