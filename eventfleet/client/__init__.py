"""The Python client: publish to the ledger and read it back.

>>> from eventfleet.client import Client, Receipt, errors  # doctest: +SKIP
"""

from __future__ import annotations

from eventfleet.client import errors
from eventfleet.client.errors import (
    BacklogFull,
    ConfigurationError,
    EventfleetError,
    InvalidEvent,
    NotInitialised,
    Unavailable,
    WaitTimeout,
)
from eventfleet.client.results import Item, OrderResult, Published, Receipt
from eventfleet.client.sync import Client

__all__ = [
    "BacklogFull",
    "Client",
    "ConfigurationError",
    "EventfleetError",
    "InvalidEvent",
    "Item",
    "NotInitialised",
    "OrderResult",
    "Published",
    "Receipt",
    "Unavailable",
    "WaitTimeout",
    "errors",
]
