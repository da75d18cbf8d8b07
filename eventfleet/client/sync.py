"""``eventfleet.Client``: publish top-ups, items and orders, wait for an order's outcome.

Example::

    import eventfleet
    client = eventfleet.Client.from_url("redis://localhost:6379/0")
    receipt = client.topup(user=42, amount=500)
    client.order(user=42, item="sku-1", qty=1, wait=5).status
    # -> 'confirmed'
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterable
from contextlib import nullcontext
from pathlib import Path
from types import TracebackType
from typing import Any, overload

import redis
from pydantic import ValidationError

from eventfleet.client.batch import Reads, fetch
from eventfleet.client.common import (
    AnyEvent,
    Numbering,
    build,
    check_event_key,
    chunk_for,
    event_of,
    paced,
    result_of,
    translated,
)
from eventfleet.client.errors import ConfigurationError, InvalidEvent, WaitTimeout
from eventfleet.client.modelread import ModelRead
from eventfleet.client.results import Decided, Item, OrderResult, Published, Receipt
from eventfleet.ledger.codec import describe_validation_error
from eventfleet.ledger.events import AddItem, ExternalEvent, Order, Topup
from eventfleet.ledger.shards import ShardCounts, destination, item_shard, order_key, user_shard
from eventfleet.producer.client import Producer, source_of
from eventfleet.producer.outcomes import wait_outcome
from eventfleet.store.connection import connect
from eventfleet.store.keys import Keys
from eventfleet.store.namespace import read_counts
from eventfleet.store.settings import Settings


class Client:
    """A connection to one namespace of the ledger (thread-safe; one per process is enough).

    Every write returns a ``Receipt``. The client retries a send itself (the same source and
    seq: applied once); a write that still fails with ``Unavailable`` may or may not have
    landed, so send it again with what makes a repeat harmless: the same ``key`` (top-ups,
    items), the same ``order_id``, or the same ``source`` for ``publish_many``.

    Example::

        client = Client.from_url("redis://localhost:6379/0", namespace="eventfleet")
        client.add_item(item="sku-1", count=10, price=250)
        # -> Receipt(shard='i5', source='p:...', seq=1)
    """

    def __init__(
        self,
        r: redis.Redis,
        namespace: str = "eventfleet",
        *,
        url: str = "",
        wait_replicas: int = 0,
    ) -> None:
        """Use an existing redis-py client (single Redis or ``RedisCluster``).

        ``wait_replicas``: a write counts as done only once that many replicas of the Redis
        it went to have it (``WAIT`` after each round trip; ``Unavailable`` when fewer answer
        for as long as the client retries): what ``eventfleet produce --wait-replicas`` sets.

        Example::

            Client(redis.Redis.from_url("redis://localhost:6379/0"), "eventfleet",
                   wait_replicas=1)
        """
        self.redis = r
        self.keys = Keys(namespace)
        self._url = url or "Redis"
        self.wait_replicas = wait_replicas
        with translated(self._url):
            counts = read_counts(r, self.keys)
        self._producer = Producer(r, self.keys, counts, wait_replicas=wait_replicas)
        self._reads = Reads(lambda batch: fetch(r, batch))
        """Reads of the read model, batched across the threads sharing this client."""
        self._lock = threading.Lock()
        """This client's own source: its events leave in seq order, one publish at a time (a
        later seq landing first would make the shard drop the earlier one as a repeat)."""

    @property
    def counts(self) -> ShardCounts:
        """The shard counts this client routes with: the namespace's, re-read every few
        seconds as it publishes and reads (they grow online, docs/DESIGN-DECISIONS.md
        section 35)."""
        return self._producer.counts

    def _routing(self) -> ShardCounts:
        """The counts a read routes with, re-read first when due (a clock check otherwise),
        so a read after the counts grew reads the shard that now holds the key."""
        # regrown between this client's sends; one under way re-reads them itself
        if self._producer.counts_due() and self._lock.acquire(blocking=False):
            try:
                self._producer.learn_counts()
            finally:
                self._lock.release()
        return self._producer.counts

    def _new_producer(self, source: str | None) -> Producer:
        return Producer(
            self.redis, self.keys, self.counts, source=source, wait_replicas=self.wait_replicas
        )

    @classmethod
    def from_url(
        cls,
        url: str | None = None,
        namespace: str | None = None,
        *,
        username: str | None = None,
        password_file: str | Path | None = None,
        timeout: float = 10.0,
        wait_replicas: int = 0,
    ) -> Client:
        """Connect to ``url`` (default ``REDIS_URL``; a single Redis or any node of a Redis
        Cluster; ``rediss://`` for TLS) and the namespace (default ``EVENTFLEET_NAMESPACE``,
        else ``eventfleet``), logging in as ``username`` with the password in
        ``password_file`` (or the URL's credentials). ``wait_replicas`` as for ``Client``.

        Example::

            Client.from_url("redis://eventfleet-producer:secret@redis:6379/0")
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
        with translated(settings.redis_url):
            r = connect(settings, timeout=timeout, name=f"client-{uuid.uuid4().hex[:8]}")
        return cls(r, settings.namespace, url=settings.redis_url, wait_replicas=wait_replicas)

    # ---- writes --------------------------------------------------------------------------
    def _receipt(self, event: AnyEvent) -> Receipt:
        shard = destination(event, self.counts)
        return Receipt(shard, self._producer.source, self._producer.seq[shard])

    def _publish_one(self, event: AnyEvent, key: str | None) -> Receipt:
        check_event_key(event, key)
        with translated(self._url), self._lock:
            self._producer.publish_one(event, key=key)
            return self._receipt(event)

    def publish(self, event: AnyEvent | dict[str, Any], *, key: str | None = None) -> Receipt:
        """Publish one event, a model (``eventfleet.ledger.events``) or a dict with its ``type``;
        ``key``
        as for ``topup`` (a top-up or add_item only).

        Example::

            client.publish({"type": "topup", "user_id": 7, "amount": 500}, key="invoice-2291")
            # -> Receipt(shard='u7', source='p:...', seq=1)
        """
        return self._publish_one(event_of(event), key)

    def topup(self, user: int, amount: int, *, key: str | None = None) -> Receipt:
        """Credit ``amount`` (> 0) to ``user``. With ``key`` (an idempotency key: 1-64 of
        ``A-Z a-z 0-9 _ . : -``) the ledger applies one top-up per key within the namespace's
        dedup window, however often it is sent.

        Example::

            client.topup(user=7, amount=500, key="invoice-2291")
            # -> Receipt(shard='u7', source='p:...', seq=1)
        """
        return self._publish_one(build(Topup, user_id=user, amount=amount), key)

    def add_item(self, item: str, count: int, price: int, *, key: str | None = None) -> Receipt:
        """Add ``count`` units of ``item`` to stock at unit ``price`` (the latest price
        applies to later orders).

        Example::

            client.add_item(item="sku-1", count=10, price=250)
        """
        return self._publish_one(build(AddItem, item_id=item, count=count, price=price), key)

    @overload
    def order(
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
    def order(
        self,
        user: int,
        item: str,
        qty: int,
        *,
        order_id: str | None = ...,
        wait: float,
        on_published: Callable[[Receipt], None] | None = ...,
    ) -> OrderResult: ...

    def order(
        self,
        user: int,
        item: str,
        qty: int,
        *,
        order_id: str | None = None,
        wait: float | None = None,
        on_published: Callable[[Receipt], None] | None = None,
    ) -> Receipt | OrderResult:
        """Order ``qty`` units of ``item`` for ``user``: the item's shard reserves the stock,
        the user's shard charges ``qty * price`` (or the stock is released and the order
        rejected). ``order_id`` (default: a fresh one) is decided once: sending the same id
        again gets the first decision back as ``duplicate``.

        Without ``wait``: the receipt, at once. With ``wait`` (seconds): the ``OrderResult``,
        or ``WaitTimeout`` when no outcome came in that time (the order is still applied; the
        exception's ``receipt`` says where it went). ``on_published`` is called with the
        receipt once the order is published, before the wait (to log it, say).

        Example::

            client.order(user=7, item="sku-1", qty=2, order_id="o-1", wait=5).status
            # -> 'confirmed'
        """
        oid = order_id or f"o-{uuid.uuid4().hex[:16]}"
        event = build(Order, order_id=oid, user_id=user, item_id=item, qty=qty)
        assert isinstance(event, Order)
        at = f"{int(time.time() * 1000)}-0"
        then = self.counts  # routed with these or grown ones: the wait reads from them on
        receipt = self._publish_one(event, None)
        if on_published is not None:
            on_published(receipt)
        if wait is None:
            return receipt
        with translated(self._url):
            outcome = wait_outcome(
                self.redis,
                self.keys,
                then,
                event,
                receipt.ref,
                at,
                float(wait),
                counts_now=self._routing,  # grown meanwhile: the children's streams too
            )
        if outcome is None:
            raise WaitTimeout(
                f"order {oid}: no outcome within {wait:g} s (it is still applied)", receipt
            )
        return result_of(outcome, receipt)

    def publish_many(
        self,
        events: Iterable[AnyEvent | dict[str, Any]],
        *,
        source: str | None = None,
        seqs: Iterable[int] | Numbering = "position",
        progress: Callable[[int], None] | None = None,
        rate: float = 0.0,
    ) -> Published:
        """Publish events in order, in chunks of one round trip each (two in flight on a
        single Redis).

        With ``source`` (a name of 1-62 of ``A-Z a-z 0-9 _ . : -``) the events are numbered
        under ``p:<source>``, so publishing the same sequence again under the same name, after
        a crash at any point, applies each event once. ``seqs`` says how:

        * ``"position"`` (the default): the n-th event is numbered n; every event is checked
          before the first is sent.
        * numbers, one per event and growing per shard: a file's line numbers (what
          ``eventfleet produce file --source`` does); also checked first.
        * ``"shard"``: each shard numbers its own events 1, 2, ... in order; the events are
          streamed, never held (what ``eventfleet produce load --source`` does).

        Without ``source`` the events get this client's own source and numbering (``seqs``
        must stay ``"position"``). ``progress`` is called with the count of each chunk once
        Redis took it; ``rate`` (events per second, 0 for as fast as possible) paces the
        publish, in smaller chunks.

        Example::

            client.publish_many([{"type": "topup", "user_id": 1, "amount": 5}], source="nightly")
            # -> Published(count=1, source='p:nightly', last={'u1': Receipt(...)})
        """
        producer = self._producer
        models: Iterable[ExternalEvent] = (event_of(e) for e in events)
        numbers: Iterable[int] | None = None
        if source is None:
            if seqs != "position":
                raise InvalidEvent("seqs number a named source's events: pass source= too")
        else:
            try:
                producer = self._new_producer(source_of(source))
            except ValueError as exc:
                raise InvalidEvent(str(exc)) from None
            if seqs != "shard":
                models = list(models)  # every event valid before the first is sent
                numbers = range(1, len(models) + 1) if seqs == "position" else seqs
        with translated(self._url), self._lock if producer is self._producer else nullcontext():
            try:
                sent = producer.publish(
                    paced(models, rate) if rate else models,
                    seqs=numbers,
                    chunk=chunk_for(rate),
                    on_chunk=progress,
                )
            except ValueError as exc:  # numbers that do not grow per shard, or too few
                raise InvalidEvent(str(exc)) from None
        last = {s: Receipt(s, producer.source, n) for s, n in producer.seq.items()}
        return Published(sent, producer.source, last)

    # ---- reads (the read model: one key per read, whatever the shard's size) --------------
    def _read(self, read: ModelRead, timeout: float) -> bytes | None:
        """One field of a key's read model (``eventfleet.client.modelread``: the shard its
        counts give it, or the one a split shard's ``_routing`` names); with a receipt, once
        that shard has applied it (``WaitTimeout`` after ``timeout`` seconds)."""
        with translated(self._url):
            deadline = time.monotonic() + timeout
            pause = 0.001
            while True:
                while (ask := read.ask()) is not None:
                    read.got(self._reads.get(*ask))
                if read.applied:
                    return read.value
                after = read.receipt
                assert after is not None
                if time.monotonic() + pause > deadline:
                    raise WaitTimeout(
                        f"shard {after.shard} has not applied {after.ref} within {timeout:g} s"
                    )
                time.sleep(pause)
                pause = min(0.05, pause * 2)
                read.again()

    def balance(
        self, user: int, *, after: Receipt | OrderResult | None = None, timeout: float = 5.0
    ) -> int:
        """``user``'s balance (0 for a user never credited), read from one key.

        ``after``: a receipt of a write to this user's shard (a top-up): wait, up to
        ``timeout`` seconds, until the shard has applied it, so the balance includes it
        (read-your-writes). An ``OrderResult`` needs no wait: its outcome is recorded after
        the balance it charged.

        Example::

            receipt = client.topup(user=7, amount=500)
            client.balance(7, after=receipt)
            # -> 500 (or more)
        """
        counts = self._routing()
        shard = user_shard(user, counts)
        value = self._read(ModelRead(self.keys, user, shard, counts, f"b:{user}", after), timeout)
        return 0 if value is None else int(value)

    def item(
        self, item: str, *, after: Receipt | OrderResult | None = None, timeout: float = 5.0
    ) -> Item | None:
        """``item``'s stock and price, or None for an item never added; ``after`` as for
        ``balance`` (an ``add_item`` receipt).

        Example::

            client.item("sku-1", after=client.add_item(item="sku-1", count=10, price=250))
            # -> Item(item_id='sku-1', remain=10, price=250)
        """
        counts = self._routing()
        shard = item_shard(item, counts)
        value = self._read(ModelRead(self.keys, item, shard, counts, f"i:{item}", after), timeout)
        if value is None:
            return None
        remain, price = value.split()
        return Item(item, int(remain), int(price))

    def order_status(
        self,
        order_id: str,
        *,
        user: int,
        after: Receipt | OrderResult | None = None,
        timeout: float = 5.0,
    ) -> Decided | None:
        """``confirmed`` or ``rejected`` once ``user``'s shard has decided the order (an order
        is ``user`` and ``order_id``), else None: not decided yet, never placed, or decided
        longer ago than the namespace's dedup window (its outcome record stays in the outcome
        stream and the archive).

        Example::

            client.order(user=7, item="sku-1", qty=1, order_id="o-1")
            client.order_status("o-1", user=7)
            # -> None at first, then 'confirmed'
        """
        counts = self._routing()
        shard = user_shard(user, counts)
        key = order_key(user, order_id, counts.orders_per_user)
        value = self._read(ModelRead(self.keys, user, shard, counts, f"o:{key}", after), timeout)
        if value is None:
            return None
        return "confirmed" if value == b"confirmed" else "rejected"

    # ---- lifecycle -----------------------------------------------------------------------
    def close(self) -> None:
        self.redis.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


__all__ = ["AnyEvent", "Client"]
