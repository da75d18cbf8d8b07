"""``Idempotency-Key``: the first answer to a key is kept in Redis, under the namespace, per
identity, for ``ttl`` seconds, so every API process agrees and a restart keeps it.

One key, two states: ``pending`` (``SET NX GET`` with a short TTL while the first request is being
answered) and ``done`` (its status, body and headers). The same key with the same request gets
the first answer again; with another request, 409 ``key-reused``; while the first is still
pending, 409 ``key-in-progress`` with ``Retry-After``. A first request that fails (503, 429,
403, ...) drops its pending record, so a retry goes ahead. The ledger itself applies each
key once too (``ledger_key``): a record lost with Redis, or expired while pending, can make a
retry publish again, never apply twice.

>>> ledger_key("billing", "req-1") == ledger_key("billing", "req-1") != ledger_key("ops", "req-1")
True
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from redis import exceptions as rx

from eventfleet.api.coalesce import Coalesced, ignore
from eventfleet.api.problems import Problem
from eventfleet.store import wire

KEY_PATTERN = r"^[A-Za-z0-9_.:-]{1,64}$"
_KEY = re.compile(KEY_PATTERN)
PENDING_TTL_S = 30
"""How long a first request may take before a retry of its key may go ahead (a request takes
at most its wait plus the client's bounded send; see ``routes.SEND_TIMEOUT_S``)."""
DEFAULT_TTL_S = 24 * 3600

Answer = tuple[int, bytes, dict[str, str]]
"""A response to keep: status, JSON body, the headers that go with it."""


def check_key(key: str) -> str:
    if not _KEY.match(key):
        raise Problem(
            400,
            "invalid-request",
            "Idempotency-Key must be 1-64 of A-Z a-z 0-9 _ . : -",
        )
    return key


def _digest(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


def ledger_key(identity: str, key: str) -> str:
    """The idempotency key the ledger gets for a top-up or item: the identity's key, scoped to
    the identity (one identity cannot spend another's key)."""
    return "api." + _digest(identity, key)[:40]


def order_id_for(identity: str, key: str) -> str:
    """The order id of an order sent with an Idempotency-Key and no ``order_id``."""
    return "k-" + _digest(identity, key)[:30]


_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":")).encode


def fingerprint(method: str, path: str, body: bytes) -> str:
    """What makes two requests the same: method, path and body (JSON with its keys sorted, so
    the order and spacing of fields do not matter)."""
    try:
        canonical = _CANONICAL(json.loads(body))
    except ValueError:
        canonical = body.decode("utf-8", "replace")
    return _digest(method, path, canonical)


@dataclass
class Keys:
    """Where the records live: ``<ns>:api:idem:<identity digest>:<key>``."""

    namespace: str

    def of(self, identity: str, key: str) -> str:
        return f"{self.namespace}:api:idem:{_digest(identity)[:24]}:{key}"


def unavailable() -> Problem:
    return Problem(
        503, "unavailable", "cannot reach Redis to keep the idempotency key", retry_after=1
    )


class Batched:
    """Redis commands on the API's own connection, coalesced (``coalesce.Coalesced``): those
    issued while a round trip is in flight go in the next one, packed as one write
    (``store.wire``: no per-command pipeline bookkeeping). A batch whose connection failed is
    sent once more on a fresh one (as redis-py's retry would); then its callers get the
    error."""

    def __init__(self, r: Any) -> None:
        self.r = r
        self._together: Coalesced[tuple[Any, ...]] = Coalesced(self._roundtrip)

    def call(self, *args: Any) -> asyncio.Future[Any]:
        """``args`` as one command; its raw reply (bytes, an int, None) or its error."""
        return self._together.call(args)

    async def _roundtrip(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        pool = self.r.connection_pool
        try:
            return await wire.apipeline(pool, commands)
        except (rx.ConnectionError, rx.TimeoutError, OSError):
            return await wire.apipeline(pool, commands)  # the dead connection was dropped


class Store:
    """The records, on the API's own Redis connection (``r``: redis-py's asyncio client)."""

    def __init__(self, r: Any, namespace: str, ttl_s: int = DEFAULT_TTL_S) -> None:
        self.r = r
        self.batched = Batched(r)
        self.keys = Keys(namespace)
        self.ttl_s = ttl_s

    async def run(
        self, identity: str, key: str, fp: str, answer: Callable[[], Awaitable[Answer]]
    ) -> tuple[Answer, bool]:
        """The answer to a request with ``key``: the first one kept (and True: a replay), or
        ``answer()``'s, kept for ``ttl_s``."""
        name = self.keys.of(identity, key)
        pending = json.dumps({"state": "pending", "fp": fp})
        try:
            # claim it, or read what is there (SET NX GET: Redis 7.0)
            first = await self.batched.call("SET", name, pending, "NX", "GET", "EX", PENDING_TTL_S)
        except (rx.NoPermissionError, rx.ResponseError) as exc:
            if isinstance(exc, rx.NoPermissionError) or str(exc).startswith("NOPERM"):
                raise Problem(
                    503, "unavailable", "the API's own Redis login may not keep keys", retry_after=5
                ) from None
            raise unavailable() from None
        except (rx.RedisError, OSError):
            raise unavailable() from None
        if first is not None:
            return _replay(json.loads(first), fp), True
        try:
            status, body, headers = await answer()
        except BaseException:
            self.batched.call("DEL", name).add_done_callback(ignore)  # else it lapses
            raise
        done = {"state": "done", "fp": fp, "status": status, "body": body.decode(), "h": headers}
        # Kept in the next round trip; not awaited. Lost (Redis gone): a retry once the pending
        # record lapses publishes again with the same ledger key, which the ledger applies once.
        self.batched.call("SET", name, json.dumps(done), "EX", self.ttl_s).add_done_callback(ignore)
        return (status, body, headers), False


def _in_progress() -> Problem:
    return Problem(
        409,
        "key-in-progress",
        "a request with this Idempotency-Key is still being answered; retry",
        retry_after=1,
    )


def _replay(record: dict[str, Any], fp: str) -> Answer:
    if record.get("fp") != fp:
        raise Problem(
            409,
            "key-reused",
            "this Idempotency-Key was used with another request (method, path or body)",
        )
    if record.get("state") != "done":
        raise _in_progress()
    return int(record["status"]), str(record["body"]).encode(), dict(record.get("h") or {})


__all__ = [
    "KEY_PATTERN",
    "Answer",
    "Store",
    "check_key",
    "fingerprint",
    "ledger_key",
    "order_id_for",
]
