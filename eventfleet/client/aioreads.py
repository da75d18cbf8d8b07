"""The asyncio client's reads of the read model (``eventfleet.aio.Client`` inherits them):
``balance``, ``item`` and ``order_status``, each one field of one hash, batched across the
tasks sharing the client (``eventfleet.client.batch.AsyncReads``); with a receipt ``after``,
once its shard has applied it (read-your-writes); and an order's outcome, awaited in the
user shard's outcome stream (``order(wait=)``)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from eventfleet.client.batch import AsyncReads, afetch
from eventfleet.client.errors import WaitTimeout
from eventfleet.client.results import Decided, Item, OrderResult, Receipt
from eventfleet.ledger.codec import decode_outcome
from eventfleet.ledger.events import Order, OrderOutcome
from eventfleet.ledger.shards import ShardCounts, item_shard, order_key, user_shard
from eventfleet.producer.client import Stamper
from eventfleet.producer.outcomes import LOOKBACK_MS
from eventfleet.store import ids
from eventfleet.store.keys import Keys

T = TypeVar("T")
_BLOCK_MS = 500


class ReadMethods:
    """What ``eventfleet.aio.Client`` reads; it provides ``keys``, ``_ready`` and
    ``_guarded``."""

    keys: Keys
    _reads: AsyncReads | None

    async def _ready(self) -> tuple[Any, ShardCounts, Stamper]:
        raise NotImplementedError

    async def _guarded(self, fn: Callable[[], Awaitable[T]], retry_s: float = 3.0) -> T:
        raise NotImplementedError

    async def _read(
        self, shard: str, field: str, after: Receipt | OrderResult | None, timeout: float
    ) -> bytes | None:
        r, _counts, _stamper = await self._ready()
        if self._reads is None:
            self._reads = AsyncReads(lambda batch: afetch(r, batch))
        reads = self._reads
        model = self.keys.model(shard)

        async def get(key: str, fields: list[str]) -> list[Any]:
            return await self._guarded(lambda: reads.get(key, fields))

        if not isinstance(after, Receipt):
            (found,) = await get(model, [field])
            return None if found is None else bytes(found)
        deadline = time.monotonic() + timeout
        pause = 0.001
        mark = f"w:{after.source}"
        where = self.keys.model(after.shard)
        while True:
            if after.shard == shard:
                seq, value = await get(model, [mark, field])
            else:
                (seq,), value = await get(where, [mark]), None
            if seq is not None and int(seq) >= after.seq:
                if after.shard != shard:
                    (value,) = await get(model, [field])
                return None if value is None else bytes(value)
            if time.monotonic() + pause > deadline:
                raise WaitTimeout(
                    f"shard {after.shard} has not applied {after.ref} within {timeout:g} s"
                )
            await asyncio.sleep(pause)
            pause = min(0.05, pause * 2)

    async def balance(
        self, user: int, *, after: Receipt | OrderResult | None = None, timeout: float = 5.0
    ) -> int:
        """As ``eventfleet.Client.balance``.

        Example::

            await client.balance(7, after=await client.topup(user=7, amount=5))
        """
        _r, counts, _s = await self._ready()
        value = await self._read(user_shard(user, counts), f"b:{user}", after, timeout)
        return 0 if value is None else int(value)

    async def item(
        self, item: str, *, after: Receipt | OrderResult | None = None, timeout: float = 5.0
    ) -> Item | None:
        """As ``eventfleet.Client.item``.

        Example::

            await client.item("sku-1")
        """
        _r, counts, _s = await self._ready()
        value = await self._read(item_shard(item, counts), f"i:{item}", after, timeout)
        if value is None:
            return None
        remain, price = value.split()
        return Item(item, int(remain), int(price))

    async def order_status(
        self,
        order_id: str,
        *,
        user: int,
        after: Receipt | OrderResult | None = None,
        timeout: float = 5.0,
    ) -> Decided | None:
        """As ``eventfleet.Client.order_status``.

        Example::

            await client.order_status("o-1", user=7)
        """
        _r, counts, _s = await self._ready()
        key = order_key(user, order_id, counts.orders_per_user)
        value = await self._read(user_shard(user, counts), f"o:{key}", after, timeout)
        if value is None:
            return None
        return "confirmed" if value == b"confirmed" else "rejected"

    async def _wait_outcome(
        self, order: Order, ref: str, at_ms: int, timeout_s: float
    ) -> OrderOutcome | None:
        r, counts, _stamper = await self._ready()
        stream = self.keys.outcomes(user_shard(order.user_id, counts))
        start = f"{max(0, at_ms - LOOKBACK_MS)}-0"
        deadline = time.monotonic() + timeout_s
        while True:
            left_ms = int((deadline - time.monotonic()) * 1000)
            block = max(1, min(_BLOCK_MS, left_ms))

            async def read(begin: str = start, ms: int = block) -> Any:
                return await r.xread({stream: begin}, count=1000, block=ms)

            reply = await self._guarded(read)
            for _name, entries in reply or []:
                for eid, fields in entries:
                    start = ids.text(eid)
                    raw = fields.get(b"outcome")
                    if raw is None:
                        continue
                    try:
                        outcome = decode_outcome(raw)
                    except ValueError:
                        continue
                    if outcome.ref == ref and outcome.order_id == order.order_id:
                        return outcome
            if time.monotonic() >= deadline:
                return None


__all__ = ["ReadMethods"]
