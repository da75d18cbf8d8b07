"""Bearer tokens: a token is a producer identity's Redis credentials, ``<acl user>:<password>``.

The API stores no token. It checks one by logging in to Redis as that user (Redis keeps ACL
passwords hashed), then remembers the verified token only as its SHA-256, in memory, for
``cache_ttl`` seconds. Each identity writes through clients logged in as itself (a few per
identity, so their sends go side by side; a bounded LRU of identities), so a token writes only
what its Redis user may write, and Redis' NOPERM becomes 403.

>>> parse_token("Bearer billing:s3cret")
('billing', 's3cret')
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import structlog
from redis import asyncio as aredis
from redis import exceptions as rx

from eventfleet import aio
from eventfleet.api.coalesce import Coalesced
from eventfleet.api.problems import Problem
from eventfleet.client.common import AnyEvent
from eventfleet.client.results import Receipt
from eventfleet.store.connection import TRANSIENT, client_kwargs
from eventfleet.store.settings import Settings

log = structlog.get_logger("eventfleet.api")

CHALLENGE = {"WWW-Authenticate": 'Bearer realm="eventfleet"'}


def unauthorized(detail: str) -> Problem:
    return Problem(401, "unauthorized", detail, headers=dict(CHALLENGE))


def parse_token(header: str | None) -> tuple[str, str]:
    """(user, password) of an ``Authorization: Bearer <user>:<password>`` header; 401 for a
    missing or malformed one."""
    if not header:
        raise unauthorized("missing Authorization: Bearer <acl user>:<password>")
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise unauthorized("the Authorization header must be: Bearer <acl user>:<password>")
    user, sep, password = token.strip().partition(":")
    if not sep or not user or not password or len(token) > 1024 or not token.isprintable():
        raise unauthorized("malformed bearer token: expected <acl user>:<password>")
    return user, password


def token_hash(user: str, password: str) -> str:
    return hashlib.sha256(f"{user}\0{password}".encode()).hexdigest()


def identity_url(base: str, user: str, password: str) -> str:
    """``base`` (the API's REDIS_URL) with the identity's credentials instead of its own."""
    parts = urlsplit(base)
    host = parts.hostname or "localhost"
    if ":" in host:
        host = f"[{host}]"
    if parts.port:
        host = f"{host}:{parts.port}"
    netloc = f"{quote(user, safe='')}:{quote(password, safe='')}@{host}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


@dataclass
class Identity:
    """A verified token: its Redis user and the clients that log in as it."""

    user: str
    digest: str
    settings: Settings
    verified_at: float
    clients: list[aio.Client] = field(default_factory=list)
    _turn: itertools.count[int] = field(default_factory=itertools.count)
    _sends: list[Coalesced[tuple[AnyEvent, str | None]]] = field(default_factory=list)

    def client(self) -> aio.Client:
        """The next of the identity's clients (round robin)."""
        return self.clients[next(self._turn) % len(self.clients)]

    def publish(self, event: AnyEvent, key: str | None) -> asyncio.Future[Receipt]:
        """``event`` (with its ledger idempotency key) published by the next of the identity's
        clients, in one push with the other requests' events queued on that client while its
        send before is out (``aio.Client.publish_each``); its receipt."""
        if len(self._sends) != len(self.clients):
            self._sends = [Coalesced(c.publish_each) for c in self.clients]
        return self._sends[next(self._turn) % len(self._sends)].call((event, key))


class Authenticator:
    """Verifies tokens against Redis and keeps a bounded LRU of identities with their clients."""

    def __init__(
        self,
        settings: Settings,
        *,
        cache_ttl: float = 30.0,
        max_identities: int = 64,
        clients_per_identity: int = 4,
        timeout: float = 5.0,
    ) -> None:
        self.settings = settings
        self.cache_ttl = cache_ttl
        self.max_identities = max_identities
        self.clients_per_identity = clients_per_identity
        self.timeout = timeout
        self._known: OrderedDict[str, Identity] = OrderedDict()
        self._checking: dict[str, asyncio.Future[Identity]] = {}
        self._closing: set[asyncio.Task[None]] = set()

    def __len__(self) -> int:
        return len(self._known)

    async def identify(self, header: str | None) -> Identity:
        """The identity of a request's Authorization header: from memory while verified less
        than ``cache_ttl`` ago, else checked against Redis (one check per token at a time)."""
        user, password = parse_token(header)
        digest = token_hash(user, password)
        known = self._known.get(digest)
        if known is not None and time.monotonic() - known.verified_at < self.cache_ttl:
            self._known.move_to_end(digest)
            return known
        pending = self._checking.get(digest)
        if pending is None:
            pending = asyncio.get_running_loop().create_future()
            self._checking[digest] = pending
            try:
                found = await self._verify(user, password, digest, known)
            except BaseException as exc:
                pending.set_exception(exc)
                pending.exception()  # retrieved: no "never retrieved" warning
                raise
            else:
                pending.set_result(found)
                return found
            finally:
                del self._checking[digest]
        return await asyncio.shield(pending)

    async def _verify(
        self, user: str, password: str, digest: str, known: Identity | None
    ) -> Identity:
        url = identity_url(self.settings.redis_url, user, password)
        settings = self.settings.model_copy(
            update={"redis_url": url, "redis_username": None, "redis_password_file": None}
        )
        kwargs: dict[str, Any] = client_kwargs(settings, self.timeout, None)
        probe = aredis.Redis.from_url(url, **kwargs)
        try:
            await probe.ping()
        except rx.NoPermissionError:
            pass  # logged in: the user may simply not PING
        except (rx.AuthenticationError, rx.AuthenticationWrongNumberOfArgsError):
            self._forget(digest)
            raise unauthorized("Redis refused the token's credentials") from None
        except rx.ResponseError as exc:
            if "WRONGPASS" in str(exc) or "NOAUTH" in str(exc):
                self._forget(digest)
                raise unauthorized("Redis refused the token's credentials") from None
            if not str(exc).startswith("NOPERM"):
                raise Problem(
                    503, "unavailable", "Redis refused the check", retry_after=1
                ) from None
        except TRANSIENT:
            raise Problem(
                503, "unavailable", "cannot reach Redis to check the token", retry_after=1
            ) from None
        finally:
            await probe.aclose()
        if known is not None:
            known.verified_at = time.monotonic()
            self._known.move_to_end(digest)
            return known
        identity = Identity(user, digest, settings, time.monotonic())
        identity.clients = [
            aio.Client(settings, timeout=self.timeout) for _ in range(self.clients_per_identity)
        ]
        self._known[digest] = identity
        log.info("api_identity_verified", identity=user)
        while len(self._known) > self.max_identities:
            _, evicted = self._known.popitem(last=False)
            self._close_later(evicted)
        return identity

    def _forget(self, digest: str) -> None:
        gone = self._known.pop(digest, None)
        if gone is not None:
            self._close_later(gone)

    def _close_later(self, identity: Identity) -> None:
        async def close() -> None:
            for c in identity.clients:
                await c.aclose()

        task = asyncio.get_running_loop().create_task(close())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def aclose(self) -> None:
        while self._known:
            _, identity = self._known.popitem()
            for c in identity.clients:
                await c.aclose()
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)


__all__ = ["Authenticator", "Identity", "identity_url", "parse_token", "token_hash"]
