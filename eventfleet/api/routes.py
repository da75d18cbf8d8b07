"""The operations: ``POST /v1/topups``, ``/v1/items``, ``/v1/orders`` (``?wait=``), reads of
balances, items and orders (``?after=<receipt>``, ``?wait=``). Each authenticates first, then
reads and checks its body (nothing is published for a bad one), then publishes as its identity.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Path, Query, Request, Response
from pydantic import BaseModel, ValidationError

from eventfleet.api import idempotency
from eventfleet.api.auth import Identity
from eventfleet.api.models import (
    RECEIPT_PATTERN,
    ItemIn,
    OrderAccepted,
    OrderIn,
    OrderOut,
    ReceiptOut,
    TopupIn,
    order_out,
    receipt_out,
)
from eventfleet.api.problems import MEDIA_TYPE, PROBLEM_SCHEMA, Problem, from_client
from eventfleet.api.state import ApiState
from eventfleet.client.common import build
from eventfleet.client.errors import EventfleetError, WaitTimeout
from eventfleet.client.results import Receipt
from eventfleet.ledger.codec import describe_validation_error
from eventfleet.ledger.events import MAX_INT, AddItem, Topup

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)

SEND_TIMEOUT_S = 10.0
"""How long a publish may take (the client retries while Redis does not answer) before the
API answers 503: the write may or may not have landed; retrying with the same key is safe."""
MAX_WAIT_S = 30.0

router = APIRouter()
compact = json.JSONEncoder(separators=(",", ":")).encode
"""JSON without spaces (one encoder: ``json.dumps`` with options builds one per call)."""

_P = {"content": {MEDIA_TYPE: {"schema": PROBLEM_SCHEMA}}}
COMMON: dict[int | str, dict[str, Any]] = {
    401: {"description": "missing, malformed or wrong token", **_P},
    403: {"description": "the identity may not do this (Redis: NOPERM)", **_P},
    422: {"description": "a parameter out of range or of the wrong type", **_P},
    503: {"description": "Redis unavailable, or the namespace missing (Retry-After)", **_P},
}
WRITES: dict[int | str, dict[str, Any]] = {
    **COMMON,
    400: {"description": "the body is not JSON, or a bad Idempotency-Key", **_P},
    409: {"description": "the Idempotency-Key was used with another request, or is busy", **_P},
    413: {"description": "the body is larger than the API accepts", **_P},
    415: {"description": "the body is not application/json", **_P},
    422: {"description": "a field missing, unknown, out of range or of the wrong type", **_P},
    429: {"description": "the producer's backlog is full (Retry-After)", **_P},
}
READS: dict[int | str, dict[str, Any]] = {
    **COMMON,
    409: {"description": "the write named by `after` is not applied within `wait`", **_P},
}

KEY_PARAM = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": "the same key and body return the first answer (kept 24 h by default)",
    "schema": {"type": "string", "pattern": idempotency.KEY_PATTERN},
}
WAIT_PARAM = {
    "name": "wait",
    "in": "query",
    "required": False,
    "description": "seconds to wait for the order's outcome (long-poll); 200 with it, else 202",
    "schema": {"type": "number", "minimum": 0, "maximum": MAX_WAIT_S},
}
SECURITY: dict[str, Any] = {"security": [{"bearer": []}]}
Wait = Annotated[
    float | None,
    Query(ge=0, le=MAX_WAIT_S, description="seconds to wait for the outcome (long-poll)"),
]
After = Annotated[
    str | None,
    Query(
        pattern=RECEIPT_PATTERN,
        description="a receipt (<shard>~<seq>~<source>): answer once that write is applied",
    ),
]
ReadWait = Annotated[
    float,
    Query(ge=0, le=MAX_WAIT_S, description="seconds to wait for `after` to be applied"),
]
UserPath = Annotated[int, Path(gt=0, le=MAX_INT)]
KeyPath = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]


def state_of(request: Request) -> ApiState:
    state: ApiState = request.app.state.api
    return state


async def identify(request: Request) -> Identity:
    """The request's identity (401 without a valid token)."""
    state = state_of(request)
    identity = await state.auth.identify(request.headers.get("authorization"))
    request.scope.setdefault("state", {})["identity"] = identity.user
    state.metrics.identities.set(len(state.auth))
    return identity


def write_doc(model: type[BaseModel], *params: dict[str, Any]) -> dict[str, Any]:
    """The OpenAPI parts of a write that reads its token, headers and body itself (FastAPI's
    dependencies cost more per request than the rest of the route)."""
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": model.model_json_schema()}},
        },
        "parameters": [KEY_PARAM, *params],
        **SECURITY,
    }


def key_of(request: Request) -> str | None:
    key = request.headers.get("idempotency-key")
    return None if key is None else idempotency.check_key(key)


def wait_of(request: Request) -> float | None:
    text = request.query_params.get("wait")
    if text is None:
        return None
    try:
        wait = float(text)
    except ValueError:
        wait = -1.0
    if not 0 <= wait <= MAX_WAIT_S:
        raise Problem(422, "invalid-request", f"wait: a number of seconds from 0 to {MAX_WAIT_S:g}")
    return wait


async def read_json(request: Request, model: type[M]) -> tuple[M, bytes]:
    """The body as ``model``: 413 past the limit, 415 for another media type, 400 for bad
    JSON, 422 for a field missing, unknown, out of range or of the wrong type."""
    limit = state_of(request).config.max_body
    kind = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if kind != "application/json":
        raise Problem(415, "unsupported-media-type", "send the body as application/json")
    size = request.headers.get("content-length")
    if size is not None and size.isdigit() and int(size) > limit:
        raise Problem(413, "body-too-large", f"the body may be at most {limit} bytes")
    chunks: list[bytes] = []
    got = 0
    async for chunk in request.stream():
        got += len(chunk)
        if got > limit:
            raise Problem(413, "body-too-large", f"the body may be at most {limit} bytes")
        chunks.append(chunk)
    body = b"".join(chunks)
    try:
        return model.model_validate_json(body), body
    except ValidationError as err:
        if any(e["type"] == "json_invalid" for e in err.errors()):
            raise Problem(400, "invalid-request", "the body is not valid JSON") from None
        if any(e["type"] == "model_type" for e in err.errors()):
            raise Problem(422, "invalid-request", "the body must be a JSON object") from None
        raise Problem(422, "invalid-request", describe_validation_error(err)) from None


@asynccontextmanager
async def client_errors() -> AsyncIterator[None]:
    try:
        yield
    except EventfleetError as exc:
        raise from_client(exc) from None
    except TimeoutError:
        raise Problem(
            503,
            "unavailable",
            f"the write was not confirmed within {SEND_TIMEOUT_S:g} s; it may or may not have "
            "landed: retry with the same Idempotency-Key",
            retry_after=1,
        ) from None


async def bounded(coro: Awaitable[T]) -> T:
    async with asyncio.timeout(SEND_TIMEOUT_S):  # no task of its own, unlike wait_for
        return await coro


def json_response(
    status: int, data: dict[str, Any], headers: dict[str, str] | None = None
) -> Response:
    return Response(compact(data).encode(), status, headers=headers, media_type="application/json")


async def answered(
    request: Request,
    who: Identity,
    key: str | None,
    body: bytes,
    answer: Callable[[str | None], Awaitable[tuple[int, dict[str, Any]]]],
) -> Response:
    """``answer(ledger key)``'s response; with an Idempotency-Key, the first one kept."""
    if key is None:
        status, data = await answer(None)
        return json_response(status, data)
    state = state_of(request)

    async def first() -> idempotency.Answer:
        status, data = await answer(key)
        return status, compact(data).encode(), {}

    fp = idempotency.fingerprint(request.method, request.scope["path"], body)
    (status, raw, headers), replay = await state.idempotency.run(who.user, key, fp, first)
    if replay:
        state.metrics.replays.inc()
        headers = {**headers, "Idempotent-Replayed": "true"}
    return Response(raw, status, headers=headers, media_type="application/json")


@router.post(
    "/v1/topups",
    status_code=202,
    response_model=ReceiptOut,
    responses=WRITES,
    openapi_extra=write_doc(TopupIn),
    summary="Credit an amount to a user",
)
async def post_topup(request: Request) -> Response:
    who, key = await identify(request), key_of(request)
    topup, body = await read_json(request, TopupIn)

    async def answer(k: str | None) -> tuple[int, dict[str, Any]]:
        lk = None if k is None else idempotency.ledger_key(who.user, k)
        async with client_errors():
            event = build(Topup, user_id=topup.user, amount=topup.amount)
            r = await bounded(who.publish(event, lk))
        return 202, receipt_out(r)

    return await answered(request, who, key, body, answer)


@router.post(
    "/v1/items",
    status_code=202,
    response_model=ReceiptOut,
    responses=WRITES,
    openapi_extra=write_doc(ItemIn),
    summary="Add stock of an item at a unit price",
)
async def post_item(request: Request) -> Response:
    who, key = await identify(request), key_of(request)
    item, body = await read_json(request, ItemIn)

    async def answer(k: str | None) -> tuple[int, dict[str, Any]]:
        lk = None if k is None else idempotency.ledger_key(who.user, k)
        async with client_errors():
            event = build(AddItem, item_id=item.item, count=item.count, price=item.price)
            r = await bounded(who.publish(event, lk))
        return 202, receipt_out(r)

    return await answered(request, who, key, body, answer)


@router.post(
    "/v1/orders",
    status_code=202,
    response_model=OrderAccepted,
    responses={**WRITES, 200: {"description": "the outcome, within `wait`", "model": OrderOut}},
    openapi_extra=write_doc(OrderIn, WAIT_PARAM),
    summary="Place an order; with `wait`, long-poll for its outcome",
)
async def post_order(request: Request) -> Response:
    who, key = await identify(request), key_of(request)
    waited = state_of(request).capped(wait_of(request))
    order, body = await read_json(request, OrderIn)

    async def answer(k: str | None) -> tuple[int, dict[str, Any]]:
        oid = order.order_id
        if oid is None:
            oid = (
                f"o-{uuid.uuid4().hex[:16]}" if k is None else idempotency.order_id_for(who.user, k)
            )
        client = who.client()
        if waited is None:
            async with client_errors():
                r = await bounded(client.order(order.user, order.item, order.qty, order_id=oid))
            return 202, accepted(r, oid, order.user)
        published: list[Receipt] = []
        try:
            result = await client.order(
                order.user,
                order.item,
                order.qty,
                order_id=oid,
                wait=waited,
                on_published=published.append,
            )
        except WaitTimeout as exc:
            assert exc.receipt is not None
            return 202, accepted(exc.receipt, oid, order.user)
        except EventfleetError as exc:
            if not published:
                raise from_client(exc) from None
            # published, then the wait failed (Redis restarting): the order stands; poll it
            return 202, accepted(published[0], oid, order.user)
        return 200, order_out(result)

    return await answered(request, who, key, body, answer)


def accepted(r: Receipt, order_id: str, user: int) -> dict[str, Any]:
    return receipt_out(r) | {"order_id": order_id, "user": user, "status": "pending"}


DIRECT: dict[str, Callable[[Request], Awaitable[Response]]] = {
    "/v1/topups": post_topup,
    "/v1/items": post_item,
    "/v1/orders": post_order,
}
"""The POSTs ``front.Front`` calls itself (they take the request alone and check it
themselves); FastAPI declares them for the OpenAPI document."""
