"""``eventfleet.Client``: publish top-ups, items and orders, wait for an order's outcome.

Example::

    import eventfleet
    client = eventfleet.Client.from_url("redis://localhost:6379/0")
    receipt = client.topup(user=42, amount=500)
    client.order(user=42, item="sku-1", qty=1, wait=5).status
    # -> 'confirmed'
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any, overload

import redis
from pydantic import ValidationError
from redis import exceptions as rx

from eventfleet.client.errors import (
    ConfigurationError,
    InvalidEvent,
    NotInitialised,
    Unavailable,
    WaitTimeout,
)
from eventfleet.client.results import Decided, Item, OrderResult, Published, Receipt
from ledger.codec import describe_validation_error
from ledger.events import EXTERNAL_ADAPTER, AddItem, Order, OrderOutcome, Topup
from ledger.shards import ShardCounts, destination, item_shard, order_key, user_shard
from producer.client import InboxMissing, Producer, check_key, source_of
from producer.outcomes import wait_outcome
from store.connection import TRANSIENT, FatalRedisError, classify, connect, mask_url
from store.keys import Keys
from store.namespace import NamespaceMissing, read_counts
from store.settings import Settings

AnyEvent = Topup | AddItem | Order
"""What applications publish: ``topup``, ``add_item`` and ``order`` (ledger.events)."""


def event_of(value: AnyEvent | dict[str, Any]) -> AnyEvent:
    """An event model from a model or a dict (``{"type": "topup", ...}``); ``InvalidEvent``
    for anything else."""
    if isinstance(value, Topup | AddItem | Order):
        return value
    try:
        return EXTERNAL_ADAPTER.validate_python(value)
    except ValidationError as err:
        raise InvalidEvent(describe_validation_error(err)) from None


def build(kind: type[AnyEvent], **fields: Any) -> AnyEvent:
    try:
        return kind(**fields)
    except ValidationError as err:
        raise InvalidEvent(describe_validation_error(err)) from None


@contextmanager
def translated(url: str) -> Iterator[None]:
    """redis-py's and the store's exceptions as the client's own."""
    try:
        yield
    except NamespaceMissing as exc:
        raise NotInitialised(str(exc)) from None
    except InboxMissing as exc:
        raise NotInitialised(str(exc)) from None
    except FatalRedisError as exc:
        raise ConfigurationError(str(exc)) from None
    except TRANSIENT as exc:
        raise Unavailable(
            f"Redis at {mask_url(url)} did not answer ({type(exc).__name__})"
        ) from None
    except rx.RedisError as exc:
        fatal = classify(exc)
        raise ConfigurationError(str(fatal or exc)[:300]) from None


def result_of(o: OrderOutcome, receipt: Receipt) -> OrderResult:
    return OrderResult(o.order_id, o.status, o.reason, o.amount, o.first, receipt)


class Client:
    """A connection to one namespace of the ledger (thread-safe; one per process is enough).

    Every write returns a ``Receipt``. A write that fails with ``Unavailable`` may be retried
    as is: this client keeps its source and numbering, and the shard applies each (source,
    seq) once.

    Example::

        client = Client.from_url("redis://localhost:6379/0", namespace="eventfleet")
        client.add_item(item="sku-1", count=10, price=250)
        # -> Receipt(shard='i5', source='p:...', seq=1)
    """

    def __init__(self, r: redis.Redis, namespace: str = "eventfleet", *, url: str = "") -> None:
        """Use an existing redis-py client (single Redis or ``RedisCluster``)."""
        self.redis = r
        self.keys = Keys(namespace)
        self._url = url or "Redis"
        with translated(self._url):
            self.counts: ShardCounts = read_counts(r, self.keys)
        self._producer = Producer(r, self.keys, self.counts)

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
        """Connect to ``url`` (default ``REDIS_URL``; a single Redis or any node of a Redis
        Cluster; ``rediss://`` for TLS) and the namespace (default ``EVENTFLEET_NAMESPACE``,
        else ``eventfleet``), logging in as ``username`` with the password in
        ``password_file`` (or the URL's credentials).

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
        return cls(r, settings.namespace, url=settings.redis_url)

    # ---- writes --------------------------------------------------------------------------
    def _receipt(self, event: AnyEvent) -> Receipt:
        shard = destination(event, self.counts)
        return Receipt(shard, self._producer.source, self._producer.seq[shard])

    def _publish_one(self, event: AnyEvent, key: str | None) -> Receipt:
        if key is not None:
            try:
                check_key(key)
            except ValueError as exc:
                raise InvalidEvent(str(exc)) from None
        with translated(self._url):
            self._producer.publish_one(event, key=key)
        return self._receipt(event)

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
        self, user: int, item: str, qty: int, *, order_id: str | None = ..., wait: None = ...
    ) -> Receipt: ...

    @overload
    def order(
        self, user: int, item: str, qty: int, *, order_id: str | None = ..., wait: float
    ) -> OrderResult: ...

    def order(
        self,
        user: int,
        item: str,
        qty: int,
        *,
        order_id: str | None = None,
        wait: float | None = None,
    ) -> Receipt | OrderResult:
        """Order ``qty`` units of ``item`` for ``user``: the item's shard reserves the stock,
        the user's shard charges ``qty * price`` (or the stock is released and the order
        rejected). ``order_id`` (default: a fresh one) is decided once: sending the same id
        again gets the first decision back as ``duplicate``.

        Without ``wait``: the receipt, at once. With ``wait`` (seconds): the ``OrderResult``,
        or ``WaitTimeout`` when no outcome came in that time (the order is still applied).

        Example::

            client.order(user=7, item="sku-1", qty=2, order_id="o-1", wait=5).status
            # -> 'confirmed'
        """
        oid = order_id or f"o-{uuid.uuid4().hex[:16]}"
        event = build(Order, order_id=oid, user_id=user, item_id=item, qty=qty)
        assert isinstance(event, Order)
        at = f"{int(time.time() * 1000)}-0"
        receipt = self._publish_one(event, None)
        if wait is None:
            return receipt
        with translated(self._url):
            outcome = wait_outcome(
                self.redis, self.keys, self.counts, event, receipt.ref, at, float(wait)
            )
        if outcome is None:
            raise WaitTimeout(f"order {oid}: no outcome within {wait:g} s (it is still applied)")
        return result_of(outcome, receipt)

    def publish_many(
        self,
        events: Iterable[AnyEvent | dict[str, Any]],
        *,
        source: str | None = None,
    ) -> Published:
        """Publish events in order, in chunks of one round trip each.

        With ``source`` (a name of 1-62 of ``A-Z a-z 0-9 _ . : -``), the n-th event is
        numbered n: publishing the same sequence again under the same name, after a crash at
        any point, applies each event once (what ``eventfleet produce file --source`` does
        with a file's lines). Without it, the events get this client's own source.

        Example::

            client.publish_many([{"type": "topup", "user_id": 1, "amount": 5}], source="nightly")
            # -> Published(count=1, source='p:nightly', last={'u1': Receipt(...)})
        """
        producer = self._producer
        models: Iterable[AnyEvent] = (event_of(e) for e in events)
        seqs: range | None = None
        if source is not None:
            try:
                name = source_of(source)
            except ValueError as exc:
                raise InvalidEvent(str(exc)) from None
            producer = Producer(self.redis, self.keys, self.counts, source=name)
            models = list(models)  # every event valid before the first is sent
            seqs = range(1, len(models) + 1)
        with translated(self._url):
            sent = producer.publish(models, seqs=seqs)
        last = {s: Receipt(s, producer.source, n) for s, n in producer.seq.items()}
        return Published(sent, producer.source, last)

    # ---- reads (the read model: one key per read, whatever the shard's size) --------------
    def _read(
        self,
        shard: str,
        field: str,
        after: Receipt | OrderResult | None,
        timeout: float,
    ) -> bytes | None:
        """One field of ``shard``'s read model; with a receipt ``after``, once its shard has
        applied it (``WaitTimeout`` after ``timeout`` seconds)."""
        model = self.keys.model(shard)
        with translated(self._url):
            if not isinstance(after, Receipt):  # an order's outcome: its model came first
                value: Any = self.redis.hget(model, field)
                return value if value is None else bytes(value)
            deadline = time.monotonic() + timeout
            pause = 0.001
            mark = f"w:{after.source}"
            while True:
                if after.shard == shard:
                    seq, value = self.redis.hmget(model, [mark, field])
                else:
                    seq = self.redis.hget(self.keys.model(after.shard), mark)
                    value = None
                if seq is not None and int(seq) >= after.seq:
                    if after.shard != shard:
                        value = self.redis.hget(model, field)
                    return value if value is None else bytes(value)
                if time.monotonic() + pause > deadline:
                    raise WaitTimeout(
                        f"shard {after.shard} has not applied {after.ref} within {timeout:g} s"
                    )
                time.sleep(pause)
                pause = min(0.05, pause * 2)

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
        shard = user_shard(user, self.counts)
        value = self._read(shard, f"b:{user}", after, timeout)
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
        shard = item_shard(item, self.counts)
        value = self._read(shard, f"i:{item}", after, timeout)
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
        shard = user_shard(user, self.counts)
        key = order_key(user, order_id, self.counts.orders_per_user)
        value = self._read(shard, f"o:{key}", after, timeout)
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
