"""The front of every HTTP request, as plain ASGI: its request id (``X-Request-Id``, accepted or
made, echoed), its count and time per route template, its access log line; and the writes
(``POST /v1/topups``, ``/v1/items``, ``/v1/orders``) answered directly, past FastAPI's and
Starlette's middleware, routing and dependency layers.

The writes read their token, headers and body themselves (``routes.read_json``: the same
checks and problems), so what FastAPI would add for them is eight nested ASGI layers, a router
match and an empty dependency solve: about a third of the API's CPU per top-up. Everything
else (the reads, the probes, ``/openapi.json``, a wrong method, an unknown path) goes through
FastAPI as before, and the writes stay declared there for the OpenAPI document.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import structlog
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from eventfleet.api.problems import MEDIA_TYPE, Problem
from eventfleet.api.state import ApiState

log = structlog.get_logger("eventfleet.api")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")

_COMPACT = json.JSONEncoder(separators=(",", ":")).encode
Endpoint = Callable[[Request], Awaitable[Response]]


def problem_response(p: Problem, request: Request) -> Response:
    rid = request.scope.get("state", {}).get("request_id")
    body = _COMPACT(p.body(request.url.path, rid)).encode()
    return Response(body, p.status, headers=p.headers, media_type=MEDIA_TYPE)


def internal_error(request: Request, exc: BaseException) -> Response:
    log.error("api_request_failed", path=request.url.path, error=repr(exc)[:300])
    return problem_response(Problem(500, "internal", "internal error"), request)


class Front:
    """Request id, metrics and the access log around every request (no per-request task);
    ``direct`` endpoints (by method and exact path) called here, the rest passed to ``app``."""

    def __init__(
        self,
        app: ASGIApp,
        state: ApiState,
        owner: Any,
        direct: Mapping[tuple[str, str], Endpoint],
    ) -> None:
        self.app = app
        self.state = state
        self.owner = owner  # ``scope["app"]``: the routes find the state through it
        self.direct = dict(direct)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = ""
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                text = value.decode("latin-1")
                rid = text if _REQUEST_ID.match(text) else ""
                break
        rid = rid or os.urandom(16).hex()  # as uuid4().hex, without the UUID object
        scope.setdefault("state", {})["request_id"] = rid
        status = 500
        header = (b"x-request-id", rid.encode())

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), header]
            await send(message)

        metrics = self.state.metrics
        metrics.inflight.inc()
        began = time.perf_counter()
        endpoint = self.direct.get((scope["method"], scope["path"]))
        template: str | None = scope["path"] if endpoint is not None else None
        try:
            if endpoint is None:
                await self.app(scope, receive, sending)
            else:
                await self._call(endpoint, scope, receive, sending)
        finally:
            took = time.perf_counter() - began
            metrics.inflight.dec()
            if template is None:
                template = getattr(scope.get("route"), "path", None) or "other"
            metrics.observe(template, scope["method"], status, took)
            if self.state.config.access_log:
                log.info(
                    "api_request",
                    request_id=rid,
                    method=scope["method"],
                    route=template,
                    status=status,
                    ms=round(took * 1000, 2),
                    identity=scope["state"].get("identity"),
                )

    async def _call(self, endpoint: Endpoint, scope: Scope, receive: Receive, send: Send) -> None:
        """``endpoint``'s response; a ``Problem`` as its problem, anything else a 500."""
        scope["app"] = self.owner
        request = Request(scope, receive)
        try:
            response = await endpoint(request)
        except Problem as p:
            response = problem_response(p, request)
        except Exception as exc:  # as the app's handler of the unexpected: logged, a 500
            response = internal_error(request, exc)
        await response(scope, receive, send)


__all__ = ["Endpoint", "Front", "internal_error", "problem_response"]
