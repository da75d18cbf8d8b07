"""What the client raises: one small hierarchy, never redis-py's or pydantic's exceptions.

>>> from eventfleet.client import errors
>>> issubclass(errors.InvalidEvent, errors.EventfleetError)
True
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from eventfleet.client.results import Receipt


class EventfleetError(Exception):
    """The base of every error the client raises.

    >>> try:
    ...     raise Unavailable("Redis at redis://localhost:6379/0 is unreachable")
    ... except EventfleetError as exc:
    ...     print(exc)
    Redis at redis://localhost:6379/0 is unreachable
    """


class InvalidEvent(EventfleetError, ValueError):
    """The event breaks a rule of its type (a non-positive amount, an empty id, ...); nothing
    was published.

    >>> InvalidEvent("amount: must be greater than 0").args[0]
    'amount: must be greater than 0'
    """


class ConfigurationError(EventfleetError):
    """Retrying cannot help: a URL that is not Redis, wrong credentials, a missing permission,
    a namespace that ``eventfleet init`` has not created."""


class NotInitialised(ConfigurationError):
    """The namespace does not exist on this Redis: run ``eventfleet init``."""


class Unavailable(EventfleetError):
    """Redis did not answer (or was full) for as long as the client retries; what was being
    published may or may not have landed: send it again with the same idempotency key,
    order id or ``publish_many`` source, and the shard applies it once."""


class BacklogFull(EventfleetError):
    """Refused: this producer's own bounded backlog (events published and not yet taken by a
    worker) is full, because it publishes faster than the fleet applies, or floods. Nothing of
    the refused write was accepted; send it again after ``retry_after`` seconds (the same
    idempotency key, order id or ``publish_many`` source keeps it once). Other producers are
    not affected.

    >>> BacklogFull("producer billing: backlog full (10000 events)", retry_after=0.5).retry_after
    0.5
    """

    def __init__(self, message: str, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class WaitTimeout(EventfleetError, TimeoutError):
    """An order's outcome, or a read after a receipt, did not come within the time given.
    The write itself was accepted; it is applied when a worker gets to it. ``receipt`` is
    the order's, when an order's outcome was waited for.

    >>> WaitTimeout("order o-1: no outcome within 5 s").receipt is None
    True
    """

    def __init__(self, message: str, receipt: Receipt | None = None) -> None:
        super().__init__(message)
        self.receipt = receipt


__all__ = [
    "BacklogFull",
    "ConfigurationError",
    "EventfleetError",
    "InvalidEvent",
    "NotInitialised",
    "Unavailable",
    "WaitTimeout",
]
