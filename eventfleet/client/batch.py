"""Reads of the read model batched across concurrent callers: every read that is waiting when
a round trip starts goes out in it (one ``HMGET`` per hash, pipelined when there are several
hashes), the way a group commit batches writes. A caller alone pays one ``HMGET``; 50 threads
or tasks reading at once pay about one round trip each time instead of 50 queued ones.

>>> from eventfleet.client.batch import group
>>> group([("k1", ["a"]), ("k2", ["b"]), ("k1", ["c", "a"])])
{'k1': ['a', 'c', 'a'], 'k2': ['b']}
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

Request = tuple[str, Sequence[str]]
"""A hash and the fields wanted from it."""


def group(requests: Sequence[Request]) -> dict[str, list[str]]:
    """Fields per hash, in the order the requests ask for them (repeats kept: each request
    takes its own slice of the reply)."""
    by_key: dict[str, list[str]] = {}
    for key, fields in requests:
        by_key.setdefault(key, []).extend(fields)
    return by_key


def split(requests: Sequence[Request], replies: dict[str, list[Any]]) -> list[list[Any]]:
    """Each request's own values out of the per-hash replies ``group`` asked for."""
    taken = dict.fromkeys(replies, 0)
    out = []
    for key, fields in requests:
        at = taken[key]
        out.append(replies[key][at : at + len(fields)])
        taken[key] = at + len(fields)
    return out


def fetch(r: Any, requests: Sequence[Request]) -> list[list[Any]]:
    """One round trip for every request (redis-py, single Redis or Cluster)."""
    by_key = group(requests)
    if len(by_key) == 1:
        ((key, fields),) = by_key.items()
        return split(requests, {key: list(r.hmget(key, fields))})
    pipe = r.pipeline(transaction=False)
    for key, fields in by_key.items():
        pipe.hmget(key, fields)
    return split(requests, dict(zip(by_key, map(list, pipe.execute()), strict=True)))


async def afetch(r: Any, requests: Sequence[Request]) -> list[list[Any]]:
    """``fetch`` for redis-py's asyncio clients."""
    by_key = group(requests)
    if len(by_key) == 1:
        ((key, fields),) = by_key.items()
        return split(requests, {key: list(await r.hmget(key, fields))})
    pipe = r.pipeline(transaction=False)
    for key, fields in by_key.items():
        pipe.hmget(key, fields)
    return split(requests, dict(zip(by_key, map(list, await pipe.execute()), strict=True)))


class _Waiter:
    """A read queued in ``Reads``. ``done`` is a plain lock held from the start and released
    once (by the thread that hands it the lead, or that read its value): waiting is one
    ``acquire``, cheaper than an ``Event``'s condition and its lock per wait (50 threads
    reading at once spend most of their time handing the GIL around)."""

    __slots__ = ("done", "error", "lead", "request", "value")

    def __init__(self, request: Request) -> None:
        self.request = request
        self.done = threading.Lock()
        self.done.acquire()
        self.value: list[Any] = []
        self.error: BaseException | None = None
        self.lead = False


class Reads:
    """Batched reads for threads sharing one client. The caller that finds no round trip in
    flight sends one for everything queued (its own read included); the others wait, and when
    it is back the first of those that queued meanwhile is woken to send the next one. No
    thread of its own; an error reaches every caller whose read was in the failed round trip.

    Example::

        reads = Reads(lambda batch: fetch(redis_client, batch))
        balance, = reads.get("ns:{u0}:model", ["b:7"])
    """

    def __init__(self, send: Callable[[Sequence[Request]], list[list[Any]]]) -> None:
        self._send = send
        self._lock = threading.Lock()
        self._queued: list[_Waiter] = []
        self._busy = False

    def get(self, key: str, fields: Sequence[str]) -> list[Any]:
        me = _Waiter((key, fields))
        with self._lock:
            self._queued.append(me)
            lead = not self._busy
            self._busy = True
        if not lead:
            me.done.acquire()
            if not me.lead:
                return self._result(me)
        self._round()
        return self._result(me)

    def _round(self) -> None:
        with self._lock:
            batch, self._queued = self._queued, []
        try:
            values = self._send([w.request for w in batch])
        except BaseException as exc:
            for w in batch:
                w.error = exc
        else:
            for w, v in zip(batch, values, strict=True):
                w.value = v
        with self._lock:
            if self._queued:  # hand the next round to one who queued meanwhile
                nxt = self._queued[0]
                nxt.lead = True
                nxt.done.release()
            else:
                self._busy = False
        for w in batch:
            w.done.release()

    @staticmethod
    def _result(w: _Waiter) -> list[Any]:
        if w.error is not None:
            raise w.error
        return w.value


class AsyncReads:
    """Batched reads for tasks sharing one asyncio client: reads queued while a round trip is
    in flight (or in the same turn of the event loop) go out together in the next one, sent by
    a task that runs while anything is queued.

    Example::

        reads = AsyncReads(lambda batch: afetch(redis_client, batch))
        balance, = await reads.get("ns:{u0}:model", ["b:7"])
    """

    def __init__(self, send: Callable[[Sequence[Request]], Awaitable[list[list[Any]]]]) -> None:
        self._send = send
        self._queued: list[tuple[Request, asyncio.Future[list[Any]]]] = []
        self._runner: asyncio.Task[None] | None = None

    async def get(self, key: str, fields: Sequence[str]) -> list[Any]:
        future: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        self._queued.append(((key, fields), future))
        if self._runner is None or self._runner.done():
            self._runner = asyncio.get_running_loop().create_task(self._run())
        return await future

    async def _run(self) -> None:
        while self._queued:
            batch, self._queued = self._queued, []
            try:
                values = await self._send([req for req, _f in batch])
            except BaseException as exc:  # every read of the round trip fails with it
                for _req, f in batch:
                    if not f.done():
                        f.set_exception(exc)
                if isinstance(exc, asyncio.CancelledError):
                    raise
                continue
            for (_req, f), v in zip(batch, values, strict=True):
                if not f.done():
                    f.set_result(v)


__all__ = ["AsyncReads", "Reads", "afetch", "fetch", "group", "split"]
