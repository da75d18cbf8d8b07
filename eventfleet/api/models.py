"""What the API reads and answers: the request bodies (unknown fields refused, integers strict,
the ledger's own bounds) and the answers; the compact receipt string.

A receipt names one published event: ``<shard>~<seq>~<source>`` (``~`` is in no shard name,
sequence number or source name, and needs no escaping in a URL; a producer identity's source
is ``<identity>/<source>``).

>>> parse_receipt(receipt_text(Receipt("u3", "p:ab12", 7)))
Receipt(shard='u3', source='p:ab12', seq=7)
>>> parse_receipt("u3~7~shop/p:ab12").source
'shop/p:ab12'
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictInt

from eventfleet.client.results import Item, OrderResult, Receipt
from eventfleet.ledger.events import MAX_INT, Key

RECEIPT_PATTERN = (
    r"^[ui][0-9]{1,6}~[1-9][0-9]{0,17}~(?:[a-z0-9][a-z0-9_-]{0,31}/)?[A-Za-z0-9_.:-]{1,100}$"
)
"""A producer identity's writes name their source within it: ``<identity>/<source>``."""
_RECEIPT = re.compile(RECEIPT_PATTERN)


def receipt_text(r: Receipt) -> str:
    return f"{r.shard}~{r.seq}~{r.source}"


def parse_receipt(text: str) -> Receipt:
    """The receipt a string names; ``ValueError`` for a malformed one."""
    if not _RECEIPT.match(text):
        raise ValueError(f"after: {text[:120]!r} is not a receipt (<shard>~<seq>~<source>)")
    shard, seq, source = text.split("~", 2)
    return Receipt(shard, source, int(seq))


def _integral(value: Any) -> Any:
    """JSON has one number type: ``5.0`` is the integer 5 (as JSON Schema says); ``5.5``,
    ``"5"`` and ``true`` stay what they are, and the strict check refuses them."""
    if isinstance(value, float) and value.is_integer() and abs(value) <= MAX_INT:
        return int(value)
    return value


UserId = Annotated[StrictInt, Field(ge=1, le=MAX_INT), BeforeValidator(_integral)]
Positive = Annotated[StrictInt, Field(ge=1, le=MAX_INT), BeforeValidator(_integral)]
NonNegative = Annotated[StrictInt, Field(ge=0, le=MAX_INT), BeforeValidator(_integral)]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TopupIn(_In):
    """Credit ``amount`` (> 0) to ``user``."""

    user: UserId
    amount: Positive


class ItemIn(_In):
    """Add ``count`` units of ``item`` to stock at unit ``price`` (the latest price applies)."""

    item: Key
    count: Positive
    price: NonNegative


class OrderIn(_In):
    """Order ``qty`` units of ``item`` for ``user``. ``order_id`` (default: one derived from the
    Idempotency-Key, else a fresh one) is decided once per user."""

    user: UserId
    item: Key
    qty: Positive
    order_id: Key | None = None


class ReceiptOut(BaseModel):
    """Where the write went: pass ``receipt`` to a read's ``after`` to read your own write."""

    receipt: str = Field(pattern=RECEIPT_PATTERN, examples=["u3~7~p:5f0c2a9e41d7b3aa"])
    shard: str
    source: str
    seq: int


class OrderAccepted(ReceiptOut):
    """An order published and not (yet) decided: poll ``GET /v1/users/{user}/orders/{id}``."""

    order_id: str
    user: int
    status: Literal["pending"] = "pending"


class OrderOut(BaseModel):
    """An order's outcome. ``duplicate``: the order id was decided before (``first`` says
    how, and that stands)."""

    order_id: str
    user: int
    status: Literal["confirmed", "rejected", "duplicate", "pending"]
    reason: str | None = None
    amount: int | None = None
    first: str | None = None
    item: str | None = None
    qty: int | None = None
    receipt: str | None = None


class BalanceOut(BaseModel):
    user: int
    balance: int


class ItemOut(BaseModel):
    item: str
    remain: int
    price: int


def receipt_out(r: Receipt) -> dict[str, object]:
    return {"receipt": receipt_text(r), "shard": r.shard, "source": r.source, "seq": r.seq}


def order_out(result: OrderResult) -> dict[str, object]:
    return {
        "order_id": result.order_id,
        "user": result.user_id,
        "status": result.status,
        "reason": result.reason,
        "amount": result.amount,
        "first": result.first,
        "item": result.item_id,
        "qty": result.qty,
        "receipt": receipt_text(result.receipt),
    }


def item_out(item: Item) -> dict[str, object]:
    return {"item": item.item_id, "remain": item.remain, "price": item.price}


__all__ = [
    "RECEIPT_PATTERN",
    "BalanceOut",
    "ItemIn",
    "ItemOut",
    "OrderAccepted",
    "OrderIn",
    "OrderOut",
    "ReceiptOut",
    "TopupIn",
    "item_out",
    "order_out",
    "parse_receipt",
    "receipt_out",
    "receipt_text",
]
