"""What both clients share: events from models or dicts, the client's errors from redis-py's
and the store's, results from outcome records, and the publish's numbering and pacing.

>>> chunk_for(0)
1000
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, Literal, TypeVar, cast

from pydantic import ValidationError
from redis import exceptions as rx

from eventfleet.client.errors import (
    BacklogFull,
    ConfigurationError,
    InvalidEvent,
    NotInitialised,
    Unavailable,
)
from eventfleet.client.results import OrderResult, Receipt
from eventfleet.ledger.codec import describe_validation_error
from eventfleet.ledger.events import EXTERNAL_ADAPTER, AddItem, Order, OrderOutcome, Topup
from eventfleet.producer.client import CHUNK, InboxMissing, check_key
from eventfleet.producer.client import BacklogFull as _Full
from eventfleet.store.connection import TRANSIENT, FatalRedisError, classify, mask_url
from eventfleet.store.namespace import NamespaceError, NamespaceMissing

T = TypeVar("T")

AnyEvent = Topup | AddItem | Order
"""What applications publish: ``topup``, ``add_item`` and ``order`` (ledger.events)."""


_MODELS = frozenset({Topup, AddItem, Order})
_VALIDATE: Callable[[Any], AnyEvent] = EXTERNAL_ADAPTER.validator.validate_python
"""``EXTERNAL_ADAPTER.validate_python`` without its keyword handling (the same defaults)."""


def event_of(value: AnyEvent | dict[str, Any]) -> AnyEvent:
    """An event model from a model or a dict (``{"type": "topup", ...}``); ``InvalidEvent``
    for anything else."""
    kind = type(value)
    if kind in _MODELS:  # pydantic's isinstance costs a microsecond or two
        return cast(AnyEvent, value)
    if kind is not dict and isinstance(value, Topup | AddItem | Order):
        return value
    try:
        return _VALIDATE(value)
    except ValidationError as err:
        raise InvalidEvent(describe_validation_error(err)) from None


def check_event_key(event: AnyEvent, key: str | None) -> None:
    """``InvalidEvent`` for a malformed idempotency key, or a key on an order."""
    if key is not None:
        try:
            check_key(key)
        except ValueError as exc:
            raise InvalidEvent(str(exc)) from None
        if isinstance(event, Order):
            raise InvalidEvent("an idempotency key is for topup and add_item, not order")


def build(kind: type[AnyEvent], **fields: Any) -> AnyEvent:
    try:
        return kind(**fields)
    except ValidationError as err:
        raise InvalidEvent(describe_validation_error(err)) from None


FULL_ADVICE = (
    "nothing was lost; try again once memory is freed (`eventfleet archive` lets retention "
    "trim, or raise maxmemory)"
)
"""What ``Unavailable`` adds when Redis refused a write for being over ``maxmemory``."""


def unavailable(url: str, exc: BaseException) -> Unavailable:
    """The ``Unavailable`` for a transient error that outlasted the retries (the same line
    ``eventfleet`` commands print)."""
    if isinstance(exc, rx.OutOfMemoryError):
        return Unavailable(f"Redis at {mask_url(url)} is full (over maxmemory): {FULL_ADVICE}")
    return Unavailable(f"cannot reach Redis at {mask_url(url)} ({type(exc).__name__})")


@contextmanager
def translated(url: str) -> Iterator[None]:
    """redis-py's and the store's exceptions as the client's own."""
    try:
        yield
    except NamespaceMissing as exc:
        raise NotInitialised(str(exc)) from None
    except _Full as exc:  # this producer's own backlog is at its bound
        raise BacklogFull(str(exc), exc.retry_after) from None
    except InboxMissing as exc:  # the namespace is there, one of its inboxes is not
        raise ConfigurationError(str(exc)) from None
    except (FatalRedisError, NamespaceError) as exc:
        raise ConfigurationError(str(exc)) from None
    except TRANSIENT as exc:
        raise unavailable(url, exc) from None
    except rx.RedisError as exc:
        fatal = classify(exc)
        raise ConfigurationError(str(fatal or exc)[:300]) from None


def result_of(o: OrderOutcome, receipt: Receipt) -> OrderResult:
    return OrderResult(
        o.order_id, o.status, o.reason, o.amount, o.first, receipt, o.user_id, o.item_id, o.qty
    )


Numbering = Literal["position", "shard"]
"""How ``publish_many`` numbers events under a source name when no numbers are given."""


def paced(events: Iterable[T], rate: float) -> Iterator[T]:
    """``events`` at most ``rate`` per second (all at once for 0), on the monotonic clock.

    >>> list(paced([1, 2, 3], 0))
    [1, 2, 3]
    """
    if not rate:
        yield from events
        return
    start = time.monotonic()
    for i, ev in enumerate(events):
        delay = start + i / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        yield ev


def chunk_for(rate: float) -> int:
    """Events per round trip: ``CHUNK``, or at a ``rate`` about 20 round trips a second.

    >>> chunk_for(0), chunk_for(100), chunk_for(1_000_000)
    (1000, 5, 1000)
    """
    return CHUNK if not rate else max(1, min(CHUNK, int(rate / 20)))


__all__ = [
    "FULL_ADVICE",
    "AnyEvent",
    "Numbering",
    "build",
    "chunk_for",
    "event_of",
    "paced",
    "result_of",
    "translated",
    "unavailable",
]
