"""Calls of requests that arrive together, sent together: what is queued while a round trip is
out goes in the next one, so many requests at once cost a few round trips (and a few socket
writes: on loopback a write costs about as much CPU as the rest of a request's Python). Used
for the idempotency records (``idempotency.Store``) and the publishes (``publishing``).

>>> import asyncio
>>> async def main() -> list[int]:
...     sent: list[list[int]] = []
...     async def double(batch: list[int]) -> list[int]:
...         sent.append(batch)
...         return [2 * x for x in batch]
...     together = Coalesced(double)
...     got = await asyncio.gather(*(together.call(x) for x in (1, 2, 3)))
...     return [*got, len(sent)]
>>> asyncio.run(main())
[2, 4, 6, 1]
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Generic, TypeVar

A = TypeVar("A")


class Coalesced(Generic[A]):
    """``roundtrip(batch)`` gives one reply per call, in order; a reply that is an exception
    is that call's error. A round trip that raises fails every call of its batch. One round
    trip at a time, by a task that runs while anything is queued (none per call)."""

    def __init__(self, roundtrip: Callable[[list[A]], Awaitable[Sequence[Any]]]) -> None:
        self.roundtrip = roundtrip
        self._queue: list[tuple[A, asyncio.Future[Any]]] = []
        self._task: asyncio.Task[None] | None = None

    def call(self, arg: A) -> asyncio.Future[Any]:
        """``arg``'s reply (or error), once its round trip is back."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        self._queue.append((arg, fut))
        if self._task is None:
            self._task = loop.create_task(self._send())
        return fut

    async def _send(self) -> None:
        try:
            while self._queue:
                batch, self._queue = self._queue, []
                try:
                    replies = await self.roundtrip([arg for arg, _ in batch])
                except BaseException as exc:
                    for _, fut in batch:
                        if not fut.done():
                            fut.set_exception(exc)
                    if not isinstance(exc, Exception):
                        raise
                    continue
                for (_, fut), reply in zip(batch, replies, strict=True):
                    if fut.done():
                        continue
                    if isinstance(reply, BaseException):
                        fut.set_exception(reply)
                    else:
                        fut.set_result(reply)
        finally:
            self._task = None
            for _, fut in self._queue:  # cancelled while sending: fail the rest
                if not fut.done():
                    fut.set_exception(ConnectionError("the batch was cancelled"))
            self._queue = []


def ignore(fut: asyncio.Future[Any]) -> None:
    """A done-callback for a call nobody awaits: its error retrieved, nothing done about it."""
    if not fut.cancelled():
        fut.exception()


__all__ = ["Coalesced", "ignore"]
