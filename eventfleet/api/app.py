"""The ASGI app: the routes, problem+json for every error, and ``front.Front`` around every
request (its id, metrics and log line; the writes answered directly).

>>> from eventfleet.store.settings import Settings
>>> sorted(r.path for r in create_app(Settings()).routes if "v1" in r.path)[:2]
['/v1/items', '/v1/items/{item}']
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import structlog
from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.exceptions import HTTPException
from starlette.types import Receive, Scope, Send

from eventfleet.api import reads, routes
from eventfleet.api.front import Front, internal_error, problem_response
from eventfleet.api.problems import Problem
from eventfleet.api.state import ApiConfig, ApiState
from eventfleet.store.settings import Settings

log = structlog.get_logger("eventfleet.api")
VERSION = "1"
DESCRIPTION = """The ledger over HTTP. Writes answer 202 with a receipt (`<shard>~<seq>~<source>`);
pass it as `after` to a read to read your own write. Authenticate with
`Authorization: Bearer <acl user>:<password>` (a producer identity's Redis credentials).
Errors are RFC 9457 problem details. See docs/API.md."""


class Api(FastAPI):
    """FastAPI with ``front.Front`` around every HTTP request: it answers the writes directly
    and passes the rest to FastAPI."""

    front: Front | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.front is None or scope["type"] != "http":
            await super().__call__(scope, receive, send)
        else:
            await self.front(scope, receive, send)

    async def fastapi(self, scope: Scope, receive: Receive, send: Send) -> None:
        await super().__call__(scope, receive, send)


def create_app(settings: Settings, config: ApiConfig | None = None) -> FastAPI:
    state = ApiState(settings, config or ApiConfig())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        log.info("api_started", namespace=settings.namespace)
        yield
        await state.aclose()
        log.info("api_stopped")

    app = Api(
        title="eventfleet",
        version=VERSION,
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url="/openapi.json",
        generate_unique_id_function=lambda route: route.name,
    )
    app.state.api = state
    app.openapi = lambda: openapi_of(app)  # type: ignore[method-assign]
    app.include_router(routes.router)
    assert reads.get_balance is not None  # the reads register on routes.router
    app.add_api_route("/healthz", healthz, methods=["GET"], include_in_schema=False)
    app.add_api_route("/readyz", readyz, methods=["GET"], include_in_schema=False)
    app.add_api_route("/metrics", metrics, methods=["GET"], include_in_schema=False)

    @app.exception_handler(Problem)
    async def on_problem(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, Problem)
        return problem_response(exc, request)

    @app.exception_handler(RequestValidationError)
    async def on_invalid(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        return problem_response(Problem(422, "invalid-request", describe(exc)), request)

    @app.exception_handler(HTTPException)
    async def on_http(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        kind = {404: "not-found", 405: "method-not-allowed"}.get(exc.status_code, "invalid-request")
        problem = Problem(exc.status_code, kind, str(exc.detail), headers=dict(exc.headers or {}))
        return problem_response(problem, request)

    @app.exception_handler(Exception)
    async def on_error(request: Request, exc: Exception) -> Response:
        return internal_error(request, exc)

    direct = {("POST", path): endpoint for path, endpoint in routes.DIRECT.items()}
    app.front = Front(app.fastapi, state, app, direct)
    return app


BEARER = {
    "type": "http",
    "scheme": "bearer",
    "description": "`<acl user>:<password>`: a producer identity's Redis credentials",
}


def openapi_of(app: FastAPI) -> dict[str, Any]:
    """FastAPI's document with the bearer scheme the routes name (they read the token
    themselves)."""
    if app.openapi_schema is None:
        doc = get_openapi(
            title=app.title,
            version=app.version,
            description=app.description,
            routes=app.routes,
        )
        doc.setdefault("components", {})["securitySchemes"] = {"bearer": BEARER}
        app.openapi_schema = doc
    return app.openapi_schema


def describe(exc: RequestValidationError) -> str:
    """One line for FastAPI's validation errors: ``where: what``; ..."""
    parts = []
    for err in exc.errors()[:5]:
        where = ".".join(str(x) for x in err.get("loc", ()) if x not in ("body",))
        parts.append(f"{where}: {err.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


async def healthz(request: Request) -> Response:
    return Response(b"ok\n", media_type="text/plain")


async def readyz(request: Request) -> Response:
    ok, why = await routes.state_of(request).ready()
    return Response((why + "\n").encode(), 200 if ok else 503, media_type="text/plain")


async def metrics(request: Request) -> Response:
    return Response(routes.state_of(request).metrics.exposition(), media_type=CONTENT_TYPE_LATEST)


__all__ = ["Api", "create_app"]
