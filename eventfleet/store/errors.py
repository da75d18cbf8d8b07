"""Telling transient Redis errors from fatal ones, and keeping credentials out of messages."""

from __future__ import annotations

import re
import ssl
from urllib.parse import urlsplit, urlunsplit

from redis import exceptions as rx


class FatalRedisError(Exception):
    """A Redis problem that retrying cannot fix: bad credentials, no permission, TLS mismatch."""


class NotRedis(FatalRedisError):
    """The server at the URL does not speak the Redis protocol (a wrong port or host)."""


OutOfMemory = rx.OutOfMemoryError
"""Redis is at ``maxmemory`` (policy ``noeviction``) and refused a write: nothing of that
command happened, so it is retried like a connection error until memory is freed (retention
trims, ``eventfleet archive`` lets it trim archived history, or the limit is raised)."""

OOM_HINT = (
    "Redis is full (used memory over maxmemory) and refuses writes; retrying. Free memory: run "
    "`eventfleet archive` so retention can trim, lower EVENTFLEET_RETAIN_S, or raise maxmemory"
)

TRANSIENT: tuple[type[BaseException], ...] = (
    rx.OutOfMemoryError,
    rx.ConnectionError,
    rx.TimeoutError,
    rx.BusyLoadingError,
    rx.TryAgainError,
    rx.ClusterDownError,
    rx.SlotNotCoveredError,
    ConnectionResetError,
    BrokenPipeError,
)


def mask_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None and parts.username is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    user = parts.username or ""
    netloc = f"{user}:***@{host}" if parts.password is not None else f"{user}@{host}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def classify(exc: BaseException) -> FatalRedisError | None:
    """Return a fatal error (with a clean message) for errors that retrying cannot fix."""
    text = str(exc)
    if isinstance(exc, rx.InvalidResponse):  # an HTTP server, SSH, a database on that port
        reply = re.search(r'got "(.*?)"', text)
        began = f" with {reply.group(1)!r}" if reply else ""
        return NotRedis(
            f"the server at REDIS_URL does not speak the Redis protocol (its reply began{began}):"
            " is REDIS_URL the Redis host and port?"
        )
    if isinstance(exc, rx.AuthenticationError | rx.AuthenticationWrongNumberOfArgsError) or (
        "WRONGPASS" in text or "invalid username-password" in text
    ):
        return FatalRedisError("Redis refused the credentials (wrong user name or password)")
    if isinstance(exc, rx.NoPermissionError) or text.startswith("NOPERM"):
        first = text.split(" for ", 1)[0] if " for " in text else "a command or key"
        return FatalRedisError(f"the Redis user lacks a permission ({first[:120]})")
    if "NOAUTH" in text or "Authentication required" in text:
        return FatalRedisError(
            "Redis requires a password: set it in REDIS_URL or REDIS_PASSWORD_FILE"
        )
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ssl.SSLError):
            return FatalRedisError(
                f"TLS handshake with Redis failed ({cause.reason or 'ssl error'})"
            )
        cause = cause.__cause__ or cause.__context__
    if "SSL" in text or ("ssl" in text.lower() and "handshake" in text.lower()):
        return FatalRedisError(
            "TLS handshake with Redis failed (is the port TLS, is the CA right?)"
        )
    return None
