"""The asyncio client's reads of the read model (``eventfleet.aio.Client`` inherits them):
``balance``, ``item`` and ``order_status``, each one field of one hash, batched across the
tasks sharing the client (``eventfleet.client.batch.AsyncReads``); with a receipt ``after``,
once its shard has applied it (read-your-writes); and an order's outcome, awaited in the
user shard's outcome stream (``order(wait=)``)."""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from redis.asyncio.cluster import RedisCluster as AsyncCluster

from eventfleet.client.batch import AsyncReads, afetch
from eventfleet.client.errors import WaitTimeout
from eventfleet.client.modelread import ModelRead
from eventfleet.client.results import Decided, Item, OrderResult, Receipt
from eventfleet.ledger.events import Order, OrderOutcome
from eventfleet.ledger.shards import ShardCounts, item_shard, order_key, user_shard
from eventfleet.producer.client import Stamper
from eventfleet.producer.outcomes import RESHARD_TARGET, OutcomeWait
from eventfleet.store.keys import Keys

T = TypeVar("T")


class ReadMethods:
    """What ``eventfleet.aio.Client`` reads; it provides ``keys``, ``_ready`` and
    ``_guarded``."""

    keys: Keys
    _reads: AsyncReads | None

    async def _ready(self) -> tuple[Any, ShardCounts, Stamper]:
        raise NotImplementedError

    async def _guarded(self, fn: Callable[[], Awaitable[T]], retry_s: float = 3.0) -> T:
        raise NotImplementedError

    async def _read(self, read: ModelRead, timeout: float) -> bytes | None:
        """As ``eventfleet.Client._read``: the fetches batched across the client's tasks."""
        r, _counts, _stamper = await self._ready()
        if self._reads is None:
            self._reads = AsyncReads(lambda batch: afetch(r, batch))
        reads = self._reads

        async def get(key: str, fields: list[str]) -> list[Any]:
            return await self._guarded(lambda: reads.get(key, fields))

        deadline = time.monotonic() + timeout
        pause = 0.001
        while True:
            while (ask := read.ask()) is not None:
                read.got(await get(*ask))
            if read.applied:
                return read.value
            after = read.receipt
            assert after is not None
            if time.monotonic() + pause > deadline:
                raise WaitTimeout(
                    f"shard {after.shard} has not applied {after.ref} within {timeout:g} s"
                )
            await asyncio.sleep(pause)
            pause = min(0.05, pause * 2)
            read.again()

    async def balance(
        self, user: int, *, after: Receipt | OrderResult | None = None, timeout: float = 5.0
    ) -> int:
        """As ``eventfleet.Client.balance``.

        Example::

            await client.balance(7, after=await client.topup(user=7, amount=5))
        """
        _r, counts, _s = await self._ready()
        read = ModelRead(self.keys, user, user_shard(user, counts), counts, f"b:{user}", after)
        value = await self._read(read, timeout)
        return 0 if value is None else int(value)

    async def item(
        self, item: str, *, after: Receipt | OrderResult | None = None, timeout: float = 5.0
    ) -> Item | None:
        """As ``eventfleet.Client.item``.

        Example::

            await client.item("sku-1")
        """
        _r, counts, _s = await self._ready()
        read = ModelRead(self.keys, item, item_shard(item, counts), counts, f"i:{item}", after)
        value = await self._read(read, timeout)
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
        read = ModelRead(self.keys, user, user_shard(user, counts), counts, f"o:{key}", after)
        value = await self._read(read, timeout)
        if value is None:
            return None
        return "confirmed" if value == b"confirmed" else "rejected"

    async def _wait_outcome(
        self,
        order: Order,
        ref: str,
        at_ms: int,
        timeout_s: float,
        routed: ShardCounts | None = None,
    ) -> OrderOutcome | None:
        """As ``eventfleet.producer.outcomes.wait_outcome``: the outcome streams of the user's
        shard under the counts the order was routed with and, once the counts grew, of the
        shards it may have been forwarded to (the counts re-read when due, by ``_ready``),
        and while a reshard runs, of its target's.
        ``routed``: the counts the client had before it published the order (None: those of
        now), which the order was routed with or grew from."""
        r, now, _stamper = await self._ready()
        wait = OutcomeWait(self.keys, order, ref, at_ms, routed or now, timeout_s)
        while True:
            r, now, _stamper = await self._ready()
            wait.watch(now)
            target = functools.partial(r.hget, self.keys.meta, RESHARD_TARGET)
            wait.watch_target(await self._guarded(target))
            read = functools.partial(_xread_outcomes, r, dict(wait.starts), wait.block_ms())
            found = wait.answer(await self._guarded(read))
            if found is not None:
                return found
            if wait.over():
                return None


async def _xread_outcomes(r: Any, starts: dict[str, str], block_ms: int) -> list[Any]:
    """``producer.outcomes.read_outcomes`` for redis-py's asyncio clients."""
    if len(starts) == 1 or not isinstance(r, AsyncCluster):
        return list(await r.xread(starts, count=1000, block=block_ms) or [])
    out: list[Any] = []  # a cluster: each stream in its own slot, the block split between
    each = max(1, block_ms // len(starts))
    for stream, begin in starts.items():
        out += await r.xread({stream: begin}, count=1000, block=each) or []
    return out


__all__ = ["ReadMethods"]
