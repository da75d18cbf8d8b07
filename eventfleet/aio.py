"""``eventfleet.aio.Client``: the client for asyncio code (redis-py's asyncio), with the same
methods as ``eventfleet.Client``, each a coroutine.

Example::

    from eventfleet.aio import Client

    async def handler(user: int) -> int:
        client = Client.from_url("redis://localhost:6379/0")
        receipt = await client.topup(user=user, amount=500)
        result = await client.order(user=user, item="sku-1", qty=1, wait=5)
        await client.aclose()
        return result.amount or 0
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar, overload
from urllib.parse import urlsplit

from pydantic import ValidationError
from redis import asyncio as aredis
from redis import exceptions as rx
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster

from eventfleet.client.aioreads import ReadMethods
from eventfleet.client.backlog import Backlog
from eventfleet.client.batch import AsyncReads
from eventfleet.client.common import (
    AnyEvent,
    Numbering,
    build,
    check_event_key,
    chunk_for,
    event_of,
    result_of,
    unavailable,
)
from eventfleet.client.errors import ConfigurationError, InvalidEvent, NotInitialised, WaitTimeout
from eventfleet.client.results import OrderResult, Published, Receipt
from eventfleet.client.texts import Envelope, prepared, rerouted
from eventfleet.ledger.codec import describe_validation_error
from eventfleet.ledger.events import AddItem, Order, Topup
from eventfleet.ledger.shards import ShardCounts, destination
from eventfleet.producer.client import (
    COUNTS_EVERY_S,
    Stamper,
    check_pushed,
    grouped,
    grown,
    log,
    source_of,
)
from eventfleet.store import wire
from eventfleet.store.connection import TRANSIENT, FatalRedisError, classify, client_kwargs
from eventfleet.store.keys import Keys
from eventfleet.store.namespace import NamespaceError, NamespaceMissing, counts_of
from eventfleet.store.producers import identity_of
from eventfleet.store.settings import Settings

T = TypeVar("T")

RETRY_FOR_S = 60.0
"""How long a publish is retried while Redis does not answer (as the sync client)."""


class Client(ReadMethods):
    """A connection to one namespace of the ledger for asyncio code (one per event loop).

    ``from_url`` does no I/O; the first call connects, asks whether the URL names a Redis
    Cluster node and reads the namespace's shard counts.

    Example::

        client = Client.from_url("redis://localhost:6379/0", namespace="eventfleet")
        await client.add_item(item="sku-1", count=10, price=250)
    """

    def __init__(self, settings: Settings, *, timeout: float = 10.0) -> None:
        self.settings = settings
        self.keys = Keys(settings.namespace)
        self._timeout = timeout
        self._redis: Any = None
        self._counts: ShardCounts | None = None
        self._stamper: Stamper | None = None
        self._backlog = Backlog(None)  # an identity's own inboxes are bounded (in _ready)
        self._lock = asyncio.Lock()
        self._sending = asyncio.Lock()  # own seqs sent in order: a later one first drops it
        self._inflight: asyncio.Task[None] | None = None  # the last send started (_in_order)
        self._reads: AsyncReads | None = None  # the read model's reads, batched across tasks
        self.counts_every_s = COUNTS_EVERY_S
        """How often the shard counts are re-read (they grow online: ``_learn``)."""
        self._counts_due = 0.0

    @classmethod
    def from_url(
        cls,
        url: str | None = None,
        namespace: str | None = None,
        *,
        username: str | None = None,
        password_file: str | Path | None = None,
        timeout: float = 10.0,
    ) -> Client:
        """The same arguments as ``eventfleet.Client.from_url``.

        Example::

            client = Client.from_url("rediss://redis:6380/0", username="eventfleet-producer",
                                     password_file="/run/secrets/producer")
        """
        given: dict[str, Any] = {
            "redis_url": url,
            "namespace": namespace,
            "redis_username": username,
            "redis_password_file": Path(password_file) if password_file else None,
        }
        try:
            settings = Settings(**{k: v for k, v in given.items() if v is not None})
        except ValidationError as err:
            raise ConfigurationError(describe_validation_error(err)) from None
        return cls(settings, timeout=timeout)

    # ---- connecting ----------------------------------------------------------------------
    def _kwargs(self) -> dict[str, Any]:
        """The sync client's options (timeouts, name, credentials, TLS: one place for them)."""
        name = f"aio-client-{uuid.uuid4().hex[:8]}"
        try:
            return client_kwargs(self.settings, self._timeout, name)
        except FatalRedisError as exc:
            raise ConfigurationError(str(exc)) from None

    def _identity(self) -> str | None:
        """The producer identity this client logs in as (its own inboxes), or None."""
        kwargs = self._kwargs()
        user = kwargs.get("username") or urlsplit(self.settings.redis_url).username
        return identity_of(self.keys.ns, user)

    async def _ready(self) -> tuple[Any, ShardCounts, Stamper]:
        """The connection, the counts to route with and the client's own stamper; the counts
        re-read first when due (``_learn``), a clock check otherwise."""
        if self._redis is not None and self._counts is not None and self._stamper is not None:
            if time.monotonic() >= self._counts_due:
                await self._learn()
            return self._redis, self._counts, self._stamper
        async with self._lock:
            if self._redis is None:
                self._redis = await self._guarded(self._open)
            if self._counts is None:
                self._counts = await self._guarded(self._read_counts)
                self._counts_due = time.monotonic() + self.counts_every_s
                self._stamper = Stamper(self.keys, self._counts, identity=self._identity())
                self._backlog = Backlog(self._stamper.identity, self.keys)
        assert self._counts is not None and self._stamper is not None
        return self._redis, self._counts, self._stamper

    async def _open(self) -> Any:
        url, kwargs = self.settings.redis_url, self._kwargs()
        probe = aredis.Redis.from_url(url, **{**kwargs, "client_name": None})
        try:
            reply: Any = await probe.execute_command("HELLO", "2")  # type: ignore[no-untyped-call]
        except rx.ResponseError as exc:
            if classify(exc) is not None:
                raise
            reply = {}
        finally:
            await probe.aclose()
        if not isinstance(reply, dict):
            flat = list(reply)
            reply = dict(zip(flat[::2], flat[1::2], strict=False))
        if reply.get(b"mode", reply.get("mode")) in (b"cluster", "cluster"):
            return AsyncRedisCluster.from_url(url, **kwargs)
        return aredis.Redis.from_url(url, **kwargs)

    async def _read_counts(self) -> ShardCounts:
        meta: Any = await self._redis.hgetall(self.keys.meta)
        try:
            return counts_of(meta, self.keys)
        except NamespaceMissing as exc:
            raise NotInitialised(str(exc)) from None
        except NamespaceError as exc:
            raise ConfigurationError(str(exc)) from None

    @property
    def counts(self) -> ShardCounts | None:
        """The shard counts this client routes with, as ``eventfleet.Client.counts`` (None
        until its first call connects)."""
        return self._counts

    async def _learn(self) -> None:
        """Re-read the shard counts (one ``HMGET``) and route with them once they grew
        (docs/DESIGN-DECISIONS.md section 35): the client's stamper regrows (each new shard's
        seqs going on from its parent's) and what is stamped from then on goes to the new
        shards. What was stamped before keeps its inboxes: a send's retries push the texts
        it was given, and a bulk publish routes its chunks not yet stamped again
        (``publish_many``). A shrink or a count that is not a multiple is logged and
        ignored; a read that fails is tried again when next due."""
        self._counts_due = time.monotonic() + self.counts_every_s
        try:
            users, items = await self._redis.hmget(self.keys.meta, ["user_shards", "item_shards"])
            assert self._counts is not None and self._stamper is not None
            counts = grown(self._counts, int(users), int(items))
        except (rx.RedisError, OSError, TypeError):  # Redis away, or no namespace
            return
        except ValueError as exc:
            log.warning("shard_counts_ignored", namespace=self.keys.ns, reason=str(exc))
            return
        if counts is not None:  # no await from here: no stamp sees half of it
            self._stamper.regrow(counts)
            self._counts = counts

    async def _guarded(self, fn: Callable[[], Awaitable[T]], retry_s: float = 3.0) -> T:
        """``fn()``, retried on transient errors for ``retry_s``; errors as the client's."""
        deadline = time.monotonic() + retry_s
        wait = 0.05
        while True:
            try:
                return await fn()
            except TRANSIENT as exc:
                if classify(exc) is not None:
                    raise ConfigurationError(str(classify(exc))) from None
                if time.monotonic() + wait > deadline:
                    raise unavailable(self.settings.redis_url, exc) from None
                await asyncio.sleep(wait)
                wait = min(0.5, wait * 2)
            except FatalRedisError as exc:
                raise ConfigurationError(str(exc)) from None
            except rx.RedisError as exc:
                raise ConfigurationError(str(classify(exc) or exc)[:300]) from None

    # ---- writes --------------------------------------------------------------------------
    async def _send(self, r: Any, pushes: Sequence[tuple[str, list[str]]]) -> None:
        await self._guarded(lambda: self._backlog.before(r, pushes), RETRY_FOR_S)

        async def push() -> list[Any]:
            if not isinstance(r, AsyncRedisCluster):  # one packed write, no per-command work
                commands = [("RPUSHX", key, *texts) for key, texts in pushes]
                return wire.raise_first_error(await wire.apipeline(r.connection_pool, commands))
            pipe = r.pipeline(transaction=False)
            for key, texts in pushes:
                pipe.rpushx(key, *texts)
            return list(await pipe.execute())

        replies = await self._guarded(push, RETRY_FOR_S)
        try:
            check_pushed(pushes, replies)
        except FatalRedisError as exc:  # the namespace is there, one of its inboxes is not
            raise ConfigurationError(str(exc)) from None
        self._backlog.after(pushes, replies)

    async def _publish_one(self, event: AnyEvent, key: str | None) -> Receipt:
        check_event_key(event, key)
        r, _counts, stamper = await self._ready()
        async with self._sending:
            stamped = stamper.stamp(event, key=key)
            shard = destination(event, stamper.counts)  # regrown since _ready, maybe
            receipt = Receipt(shard, stamper.source, stamper.seq[shard])
            sent = await self._in_order(r, grouped([stamped]))
        await sent
        return receipt

    async def publish_each(self, events: Sequence[tuple[AnyEvent, str | None]]) -> list[Receipt]:
        """Each ``(event, idempotency key or None)`` as ``publish`` would, stamped together and
        sent in one round trip (one ``RPUSHX`` per inbox): each one's receipt, in order. All or
        nothing: one bad key raises ``InvalidEvent`` before anything is sent, and a failed send
        (``BacklogFull``, Redis down) is every event's. For a server that answers many callers
        at once (``eventfleet api``): a round trip per batch instead of per event.

        Example::

            receipts = await client.publish_each([(Topup(user_id=7, amount=5), "inv-1")])
        """
        for event, key in events:
            check_event_key(event, key)
        r, _counts, stamper = await self._ready()
        async with self._sending:
            stamped: list[tuple[str, str]] = []
            receipts: list[Receipt] = []
            for event, key in events:
                stamped.append(stamper.stamp(event, key=key))
                shard = destination(event, stamper.counts)
                receipts.append(Receipt(shard, stamper.source, stamper.seq[shard]))
            sent = await self._in_order(r, grouped(stamped))
        await sent
        return receipts

    async def _in_order(
        self,
        r: Any,
        pushes: Sequence[tuple[str, list[str]]],
        prev: asyncio.Task[None] | None = None,
    ) -> asyncio.Task[None]:
        """Start sending ``pushes`` once the send before it (of any caller) is over: sends
        leave in the order they were stamped, so no seq lands ahead of a lower one. Called
        under ``_sending``; the caller awaits the task for its outcome, and the next send
        starts while this one's round trip is out (a bulk publish stamps its next chunk
        meanwhile). ``prev``: this caller's own previous send; if it failed, nothing more
        is sent (a later chunk landing would let the shards drop the failed one's seqs as
        repeats when it is sent again)."""
        if self._inflight is not None:
            await asyncio.wait([self._inflight])
        if prev is not None:
            prev.result()  # done by now; its error stops the rest
        task = asyncio.get_running_loop().create_task(self._send(r, pushes))
        task.add_done_callback(_observed)
        self._inflight = task
        await asyncio.sleep(0)  # let it send before the caller goes on stamping
        return task

    async def publish(self, event: AnyEvent | dict[str, Any], *, key: str | None = None) -> Receipt:
        """As ``eventfleet.Client.publish``: one event, a model or a dict with its ``type``.

        Example::

            await client.publish({"type": "topup", "user_id": 7, "amount": 500})
        """
        return await self._publish_one(event_of(event), key)

    async def topup(self, user: int, amount: int, *, key: str | None = None) -> Receipt:
        """As ``eventfleet.Client.topup``.

        Example::

            await client.topup(user=7, amount=500, key="invoice-2291")
        """
        return await self._publish_one(build(Topup, user_id=user, amount=amount), key)

    async def add_item(
        self, item: str, count: int, price: int, *, key: str | None = None
    ) -> Receipt:
        """As ``eventfleet.Client.add_item``.

        Example::

            await client.add_item(item="sku-1", count=10, price=250)
        """
        return await self._publish_one(build(AddItem, item_id=item, count=count, price=price), key)

    @overload
    async def order(
        self,
        user: int,
        item: str,
        qty: int,
        *,
        order_id: str | None = ...,
        wait: None = ...,
        on_published: Callable[[Receipt], None] | None = ...,
    ) -> Receipt: ...

    @overload
    async def order(
        self,
        user: int,
        item: str,
        qty: int,
        *,
        order_id: str | None = ...,
        wait: float,
        on_published: Callable[[Receipt], None] | None = ...,
    ) -> OrderResult: ...

    async def order(
        self,
        user: int,
        item: str,
        qty: int,
        *,
        order_id: str | None = None,
        wait: float | None = None,
        on_published: Callable[[Receipt], None] | None = None,
    ) -> Receipt | OrderResult:
        """As ``eventfleet.Client.order``: the receipt at once, or with ``wait`` the outcome
        (``WaitTimeout`` when none came in time).

        Example::

            result = await client.order(user=7, item="sku-1", qty=2, wait=5)
        """
        oid = order_id or f"o-{uuid.uuid4().hex[:16]}"
        event = build(Order, order_id=oid, user_id=user, item_id=item, qty=qty)
        assert isinstance(event, Order)
        at = int(time.time() * 1000)
        then = self._counts  # routed with these or grown ones: the wait reads from them on
        receipt = await self._publish_one(event, None)
        if on_published is not None:
            on_published(receipt)
        if wait is None:
            return receipt
        outcome = await self._wait_outcome(event, receipt.ref, at, float(wait), then)
        if outcome is None:
            raise WaitTimeout(
                f"order {oid}: no outcome within {wait:g} s (it is still applied)", receipt
            )
        return result_of(outcome, receipt)

    async def publish_many(
        self,
        events: Iterable[AnyEvent | dict[str, Any]],
        *,
        source: str | None = None,
        seqs: Iterable[int] | Numbering = "position",
        progress: Callable[[int], None] | None = None,
        rate: float = 0.0,
    ) -> Published:
        """As ``eventfleet.Client.publish_many``: with ``source`` the events are numbered by
        ``seqs`` (``"position"``: the n-th is n; numbers of their own, growing per shard;
        ``"shard"``: 1, 2, ... per shard), so publishing the same sequence again applies each
        event once. Every event is checked before the first is sent; ``progress`` gets each
        chunk's count, ``rate`` (events per second) paces the chunks.

        Example::

            await client.publish_many(rows, source="nightly-2026-12-07")
        """
        r, counts, stamper = await self._ready()
        if source is None:
            if seqs != "position":
                raise InvalidEvent("seqs number a named source's events: pass source= too")
        else:
            try:
                stamper = Stamper(self.keys, counts, source_of(source), self._identity())
            except ValueError as exc:
                raise InvalidEvent(str(exc)) from None
        # every event valid before the first is sent, routed as its stamper routes
        shards, bodies = prepared(events, stamper.counts)
        routed = stamper.counts
        numbers: list[int] | None = None
        if source is not None and seqs != "shard":
            numbers = list(range(1, len(shards) + 1)) if seqs == "position" else list(seqs)
            if len(numbers) != len(shards):
                raise InvalidEvent(f"{len(numbers)} seqs for {len(shards)} events")
        size = chunk_for(rate)
        began = time.monotonic()
        pending: asyncio.Task[None] | None = None  # the previous chunk's send, still out
        sizes: list[int] = []  # chunks sent and not yet confirmed, for ``progress``
        envelope = Envelope(stamper)
        for start in range(0, len(shards), size):
            if rate:
                await asyncio.sleep(max(0.0, began + start / rate - time.monotonic()))
            end = start + size
            nums = None if numbers is None else numbers[start:end]
            _r, counts, _s = await self._ready()  # the counts re-read when due
            async with self._sending:  # in seq order with this client's other sends
                if stamper.counts != self._counts:  # grown: a named source's stamper too
                    stamper.regrow(self._counts or counts)
                if stamper.counts is not routed:  # the rest goes where the new counts say
                    shards[start:] = rerouted(bodies[start:], stamper.counts)
                    routed = stamper.counts
                try:
                    pushes = envelope.pushes(shards[start:end], bodies[start:end], nums)
                except ValueError as exc:  # numbers that do not grow per shard
                    if pending is not None:
                        await pending
                    raise InvalidEvent(str(exc)) from None
                sending = await self._in_order(r, pushes, pending)
            if pending is not None:
                await pending
                if progress is not None:
                    progress(sizes.pop(0))
            pending = sending
            sizes.append(min(end, len(shards)) - start)
        if pending is not None:
            await pending
            if progress is not None:
                progress(sizes.pop(0))
        last = {s: Receipt(s, stamper.source, n) for s, n in stamper.seq.items()}
        return Published(len(shards), stamper.source, last)

    # ---- lifecycle -----------------------------------------------------------------------
    async def aclose(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = None
            self._reads = None

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()


def _observed(task: asyncio.Task[None]) -> None:
    """A send's error is its caller's; a caller cancelled meanwhile leaves it unread, which
    asyncio would report as never retrieved."""
    if not task.cancelled():
        task.exception()


__all__ = ["Client"]
