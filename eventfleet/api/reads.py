"""The reads: a balance, an item, an order's outcome, from the read model the workers keep;
``after=<receipt>`` waits until that write is applied (read-your-writes), ``wait`` long-polls
an order until it is decided."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from fastapi import Request, Response

from eventfleet.api.models import BalanceOut, ItemOut, OrderOut, item_out, parse_receipt
from eventfleet.api.problems import Problem
from eventfleet.api.routes import (
    READS,
    SECURITY,
    After,
    KeyPath,
    ReadWait,
    UserPath,
    Wait,
    client_errors,
    identify,
    json_response,
    router,
    state_of,
)
from eventfleet.client.results import Receipt

POLL_MAX_S = 0.05


def _after(after: str | None) -> Receipt | None:
    if after is None:
        return None
    try:
        return parse_receipt(after)
    except ValueError as exc:
        raise Problem(422, "invalid-request", str(exc)) from None


@router.get(
    "/v1/users/{user}/balance",
    response_model=BalanceOut,
    responses=READS,
    openapi_extra=SECURITY,
    summary="A user's balance (0 for a user never credited)",
)
async def get_balance(
    request: Request, user: UserPath, after: After = None, wait: ReadWait = 5.0
) -> Response:
    who, receipt = await identify(request), _after(after)
    async with client_errors():
        balance = await who.client().balance(
            user, after=receipt, timeout=state_of(request).capped(wait) or 0.0
        )
    return json_response(200, {"user": user, "balance": balance})


@router.get(
    "/v1/items/{item}",
    response_model=ItemOut,
    responses={**READS, 404: {"description": "no such item (never added)"}},
    openapi_extra=SECURITY,
    summary="An item's stock and unit price",
)
async def get_item(
    request: Request, item: KeyPath, after: After = None, wait: ReadWait = 5.0
) -> Response:
    who, receipt = await identify(request), _after(after)
    async with client_errors():
        found = await who.client().item(
            item, after=receipt, timeout=state_of(request).capped(wait) or 0.0
        )
    if found is None:
        raise Problem(404, "not-found", f"item {item} was never added")
    return json_response(200, item_out(found))


@router.get(
    "/v1/users/{user}/orders/{order_id}",
    response_model=OrderOut,
    responses={
        **READS,
        202: {"description": "not decided (yet): pending at the deadline", "model": OrderOut},
    },
    openapi_extra=SECURITY,
    summary="An order's outcome (an order is its user and order id); `wait` long-polls",
)
async def get_order(
    request: Request, user: UserPath, order_id: KeyPath, wait: Wait = None
) -> Response:
    who = await identify(request)
    deadline = time.monotonic() + (state_of(request).capped(wait) or 0.0)
    client = who.client()
    pause = 0.002
    while True:
        async with client_errors():
            status = await client.order_status(order_id, user=user)
        if status is not None:
            return json_response(200, _order(order_id, user, status))
        left = deadline - time.monotonic()
        if left <= 0:
            return json_response(202, _order(order_id, user, "pending"))
        await asyncio.sleep(min(pause, left))
        pause = min(POLL_MAX_S, pause * 2)


def _order(order_id: str, user: int, status: str) -> dict[str, Any]:
    return {"order_id": order_id, "user": user, "status": status}


__all__ = ["BalanceOut", "ItemOut", "get_balance", "get_item", "get_order"]
