"""Connecting to Redis: URL, ACL user, password file, TLS; and telling transient from fatal.

Credentials never reach a log line or an error message: every URL we show goes through
``mask_url``, and fatal errors are rephrased without the text Redis or the driver gave.
"""

from __future__ import annotations

import ssl
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis
from redis import exceptions as rx

from worker.settings import Settings


class FatalRedisError(Exception):
    """A Redis problem that retrying cannot fix: bad credentials, no permission, TLS mismatch."""


TRANSIENT: tuple[type[BaseException], ...] = (
    rx.ConnectionError,
    rx.TimeoutError,
    rx.BusyLoadingError,
    rx.TryAgainError,
    rx.ClusterDownError,
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


def connect(settings: Settings, *, timeout: float = 10.0, name: str | None = None) -> redis.Redis:
    """A client for ``settings.redis_url`` with the ACL user, password file and TLS applied."""
    url = settings.redis_url
    scheme = urlsplit(url).scheme
    if scheme not in ("redis", "rediss", "unix"):
        raise FatalRedisError(f"REDIS_URL must start with redis:// or rediss://, got {scheme!r}://")
    kwargs: dict[str, Any] = {
        "socket_timeout": timeout,
        "socket_connect_timeout": min(timeout, 5.0),
        "socket_keepalive": True,
        "health_check_interval": 0,
        "client_name": name,
    }
    if settings.redis_password_file is not None:
        try:
            kwargs["password"] = settings.redis_password_file.read_text().strip()
        except OSError as exc:
            raise FatalRedisError(
                f"cannot read REDIS_PASSWORD_FILE {settings.redis_password_file}: {exc.strerror}"
            ) from None
    if settings.redis_username:
        kwargs["username"] = settings.redis_username
    if scheme == "rediss":
        kwargs["ssl_cert_reqs"] = "required"
        if settings.tls_ca_file:
            kwargs["ssl_ca_certs"] = str(settings.tls_ca_file)
        if settings.tls_cert_file:
            kwargs["ssl_certfile"] = str(settings.tls_cert_file)
        if settings.tls_key_file:
            kwargs["ssl_keyfile"] = str(settings.tls_key_file)
    try:
        return redis.Redis.from_url(url, **kwargs)
    except ValueError as exc:
        raise FatalRedisError(f"REDIS_URL {mask_url(url)} is not valid: {exc}") from None
