"""eventfleet: the command line and the tools around the product.

``cli`` (the commands), ``ops`` (read-side operator tools: status, state, verify, dead letters,
resharding), ``local`` (a throwaway Redis, cluster and fleet for development and tests),
``chaos`` and ``bench``. The only package that may import every other one."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # imported on first use: `eventfleet --help` stays fast
    from eventfleet.client import (
        BacklogFull,
        Client,
        ConfigurationError,
        EventfleetError,
        InvalidEvent,
        Item,
        NotInitialised,
        OrderResult,
        Published,
        Receipt,
        Unavailable,
        WaitTimeout,
    )


def __getattr__(name: str) -> Any:
    if name in __all__:
        from eventfleet import client

        return getattr(client, name)
    raise AttributeError(f"module 'eventfleet' has no attribute {name!r}")


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
]
