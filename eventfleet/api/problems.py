"""Errors as RFC 9457 problem details (``application/problem+json``): one ``Problem``
exception the routes raise, and the client's errors mapped to their HTTP status.

>>> Problem(404, "not-found", "no such order").body()["type"]
'urn:eventfleet:problem:not-found'
"""

from __future__ import annotations

import math
from typing import Any

from eventfleet.client.errors import (
    BacklogFull,
    ConfigurationError,
    EventfleetError,
    InvalidEvent,
    NotInitialised,
    Unavailable,
    WaitTimeout,
)

MEDIA_TYPE = "application/problem+json"
BASE = "urn:eventfleet:problem:"
"""Problem types are URNs (RFC 9457 allows a type URI that resolves nowhere): docs/API.md lists
them."""

TITLES = {
    "invalid-request": "The request is not valid",
    "body-too-large": "The body is larger than the API accepts",
    "unauthorized": "Missing or wrong bearer token",
    "forbidden": "The identity may not do this",
    "not-found": "Not found",
    "key-reused": "The idempotency key was used with another request",
    "key-in-progress": "A request with this idempotency key is still being answered",
    "not-applied-yet": "The write named by `after` is not applied yet",
    "backlog-full": "The producer's backlog is full",
    "unavailable": "Redis is unavailable",
    "not-initialised": "The namespace does not exist",
    "method-not-allowed": "Method not allowed",
    "unsupported-media-type": "The body must be application/json",
    "not-acceptable": "Not acceptable",
    "internal": "Internal error",
}


class Problem(Exception):
    """An answer other than success: raised by a route, rendered by the app's handler."""

    def __init__(
        self,
        status: int,
        kind: str,
        detail: str,
        *,
        retry_after: float | None = None,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(detail)
        assert kind in TITLES, kind
        self.status = status
        self.kind = kind
        self.detail = detail
        self.headers = dict(headers or {})
        if retry_after is not None:
            self.headers["Retry-After"] = str(max(1, math.ceil(retry_after)))
        self.extra = extra or {}

    def body(self, instance: str | None = None, request_id: str | None = None) -> dict[str, Any]:
        """The problem document; ``instance`` the request's path, ``request_id`` its id (an
        extension member, as in the ``X-Request-Id`` header and the log line)."""
        out: dict[str, Any] = {
            "type": BASE + self.kind,
            "title": TITLES[self.kind],
            "status": self.status,
            "detail": self.detail,
        }
        if instance is not None:
            out["instance"] = instance
        if request_id is not None:
            out["request_id"] = request_id
        return out | self.extra


def is_permission(exc: ConfigurationError) -> bool:
    """Redis refused a command or key to this identity (NOPERM), as the client words it
    (``eventfleet.store.errors.classify``)."""
    return "lacks a permission" in str(exc)


def from_client(exc: EventfleetError) -> Problem:
    """The problem for one of the client's errors."""
    if isinstance(exc, InvalidEvent):
        return Problem(422, "invalid-request", str(exc))
    if isinstance(exc, BacklogFull):
        return Problem(429, "backlog-full", str(exc), retry_after=exc.retry_after)
    if isinstance(exc, Unavailable):
        return Problem(503, "unavailable", str(exc), retry_after=1)
    if isinstance(exc, WaitTimeout):
        return Problem(409, "not-applied-yet", str(exc), retry_after=1)
    if isinstance(exc, NotInitialised):
        return Problem(503, "not-initialised", str(exc), retry_after=5)
    if isinstance(exc, ConfigurationError) and is_permission(exc):
        return Problem(403, "forbidden", str(exc))
    if isinstance(exc, ConfigurationError) and "refused the credentials" in str(exc):
        return Problem(
            401,
            "unauthorized",
            "Redis refused the token's credentials",
            headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
        )
    return Problem(503, "unavailable", str(exc)[:300], retry_after=5)


PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "instance": {"type": "string"},
        "request_id": {"type": "string"},
    },
}
"""The JSON schema of a problem, for the OpenAPI document."""


__all__ = ["MEDIA_TYPE", "PROBLEM_SCHEMA", "Problem", "from_client", "is_permission"]
