"""The small typed results of the client.

>>> r = Receipt(shard="u3", source="p:abc", seq=7)
>>> r.ref
'p:abc/7'
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True, slots=True)
class Receipt:
    """Where one published event went: its shard, and its (source, seq) there.

    Publishing the same event again under the same source and seq takes effect once; pass a
    receipt to a read (``after=``) to read your own write.

    >>> Receipt(shard="u0", source="p:nightly", seq=12).ref
    'p:nightly/12'
    """

    shard: str
    source: str
    seq: int

    @property
    def ref(self) -> str:
        """``<source>/<seq>``, as outcome records name the order entry they answer."""
        return f"{self.source}/{self.seq}"


Status = Literal["confirmed", "rejected", "duplicate"]

Decided = Literal["confirmed", "rejected"]
"""What ``order_status`` reads: how the user's shard decided the order."""


@dataclass(frozen=True, slots=True)
class OrderResult:
    """The outcome of an order: ``confirmed`` (stock taken, user charged ``amount``),
    ``rejected`` (with a ``reason``: unknown item, out of stock, insufficient funds, ...) or
    ``duplicate`` (the order id was decided before; ``first`` says how, and that stands).

    ``user_id``, ``item_id`` and ``qty`` are the order's; ``receipt`` says where it went.

    >>> OrderResult("o-1", "confirmed", None, 300, None, Receipt("i2", "p:x", 1), 7, "sku-1", 3).ok
    True
    """

    order_id: str
    status: Status
    reason: str | None
    amount: int | None
    first: str | None
    receipt: Receipt
    user_id: int
    item_id: str
    qty: int

    @property
    def ok(self) -> bool:
        return self.status == "confirmed"


@dataclass(frozen=True, slots=True)
class Published:
    """What ``publish_many`` sent: how many events, under which source, and the last
    receipt per shard (pass any of them to a read's ``after=``).

    >>> p = Published(2, "p:f", {"u1": Receipt("u1", "p:f", 2)})
    >>> p.receipts()
    [Receipt(shard='u1', source='p:f', seq=2)]
    """

    count: int
    source: str
    last: dict[str, Receipt]

    def receipts(self) -> list[Receipt]:
        return [self.last[s] for s in sorted(self.last)]


@dataclass(frozen=True, slots=True)
class Item:
    """An item's stock and unit price.

    >>> Item("sku-1", remain=4, price=250).remain
    4
    """

    item_id: str
    remain: int
    price: int


__all__ = ["Decided", "Item", "OrderResult", "Published", "Receipt", "Status"]
