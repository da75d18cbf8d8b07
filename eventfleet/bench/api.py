"""Scenario w: the HTTP API (``eventfleet api``, one process) against the asyncio client on the
same machine, in one run: top-ups, and orders with ``wait`` (each waits for its outcome).

Each side runs ``concurrency`` callers: HTTP callers on keep-alive connections of our own
minimal client (``eventfleet.bench.http``), every top-up with an Idempotency-Key; client
callers as tasks sharing one ``eventfleet.aio.Client`` (one call per top-up, as a handler
would). Requests per second, p50 and p99 latency per side; the API process' CPU per request
(and per top-up and per order apart) and the machine's load. Two workers apply everything;
orders find stock and money enough.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

from eventfleet import aio
from eventfleet.bench import runs as bench_runs
from eventfleet.bench.env import BenchEnv, BenchError, cpu_seconds, load
from eventfleet.bench.http import Conn
from eventfleet.local.api import LocalApi

TOKEN = {"Authorization": "Bearer default:bench"}
"""The bench's Redis has no ACL: its default user takes any password."""
ITEMS = 20
USERS = 1000


def _pct(lats: list[float], p: float) -> float:
    s = sorted(lats)
    i = min(len(s) - 1, max(0, round(p / 100 * len(s) + 0.5) - 1))
    return round(s[i] * 1000, 2)


def _figures(lats: list[float], seconds: float) -> dict[str, float]:
    return {
        "per_s": round(len(lats) / seconds, 1) if seconds else 0.0,
        "p50_ms": _pct(lats, 50),
        "p99_ms": _pct(lats, 99),
    }


async def _drive(
    callers: int, n: int, call: Callable[[int, int], Awaitable[None]]
) -> tuple[list[float], float]:
    """``n`` calls over ``callers`` tasks (caller k makes calls k, k+callers, ...): every
    latency, and the wall time."""
    lats: list[float] = []

    async def caller(k: int) -> None:
        for i in range(k, n, callers):
            t = time.perf_counter()
            await call(k, i)
            lats.append(time.perf_counter() - t)

    began = time.perf_counter()
    await asyncio.gather(*(caller(k) for k in range(callers)))
    return lats, time.perf_counter() - began


async def _client_side(url: str, ns: str, callers: int, n: int, orders: int) -> dict[str, Any]:
    async with aio.Client.from_url(url, namespace=ns) as client:
        await client.topup(user=1, amount=1)  # connected

        async def topup(k: int, i: int) -> None:
            await client.topup(user=1 + i % USERS, amount=1, key=f"c{i}")

        async def order(k: int, i: int) -> None:
            result = await client.order(
                user=1 + i % USERS, item=f"sku-{i % ITEMS}", qty=1, order_id=f"c{i}", wait=5
            )
            if not result.ok:
                raise BenchError(f"client order {i}: {result.status} {result.reason}")

        lats, secs = await _drive(callers, n, topup)
        olats, osecs = await _drive(callers, orders, order)
    return {"topups": _figures(lats, secs), "orders": _figures(olats, osecs)}


async def _http_side(api: LocalApi, callers: int, n: int, orders: int) -> dict[str, Any]:
    """Both phases over HTTP; with the API process' CPU seconds in each (``cpu_s``)."""
    assert api.proc is not None
    pid = api.proc.pid
    parts = urlsplit(api.url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    conns = [await Conn.open(host, port) for _ in range(callers)]
    run = uuid.uuid4().hex[:8]
    try:

        async def topup(k: int, i: int) -> None:
            headers = {**TOKEN, "Idempotency-Key": f"{run}-{i}"}
            doc = {"user": 1 + i % USERS, "amount": 1}
            status, _h, body = await conns[k].json("POST", "/v1/topups", doc, headers)
            if status != 202:
                raise BenchError(f"POST /v1/topups: {status} {body}")

        async def order(k: int, i: int) -> None:
            doc = {"user": 1 + i % USERS, "item": f"sku-{i % ITEMS}", "qty": 1}
            doc["order_id"] = f"h{i}"
            status, _h, body = await conns[k].json("POST", "/v1/orders?wait=5", doc, TOKEN)
            if status != 200 or body["status"] != "confirmed":
                raise BenchError(f"POST /v1/orders?wait=5: {status} {body}")

        await topup(0, -1)  # the identity verified, its clients connected
        cpu0 = cpu_seconds(pid)
        lats, secs = await _drive(callers, n, topup)
        cpu1 = cpu_seconds(pid)
        olats, osecs = await _drive(callers, orders, order)
        cpu2 = cpu_seconds(pid)
    finally:
        for c in conns:
            await c.close()
    cpu_s = {"topups": cpu1 - cpu0, "orders": cpu2 - cpu1}
    return {"topups": _figures(lats, secs), "orders": _figures(olats, osecs), "cpu_s": cpu_s}


def http_vs_client(env: BenchEnv, n: int, orders: int, callers: int = 32) -> dict[str, Any]:
    keys = env.namespace("bench-w", bench_runs.COUNTS)
    fleet = env.fleet(keys.ns)
    for _ in range(2):
        fleet.start()
    api = LocalApi(env.url, keys.ns, env.workdir / "logs" / "api.log")
    api.start()
    try:
        seed = aio.Client.from_url(env.url, namespace=keys.ns)

        async def stock() -> None:
            for i in range(ITEMS):
                await seed.add_item(item=f"sku-{i}", count=10 * (n + orders), price=1)
            await seed.publish_many(
                {"type": "topup", "user_id": u, "amount": 10**9} for u in range(1, USERS + 1)
            )
            await seed.aclose()

        asyncio.run(stock())
        assert api.proc is not None
        load_before = load()
        client = asyncio.run(_client_side(env.url, keys.ns, callers, n, orders))
        cpu0 = cpu_seconds(api.proc.pid)
        http = asyncio.run(_http_side(api, callers, n, orders))
        api_cpu = cpu_seconds(api.proc.pid) - cpu0
    finally:
        api.stop()
        fleet.stop_all()
        env.drop(keys)
    ratio = http["topups"]["per_s"] / client["topups"]["per_s"] if client["topups"]["per_s"] else 0
    return {
        "requests": n,
        "orders": orders,
        "callers": callers,
        "client": client,
        "http": http,
        "http_topup_per_s": http["topups"]["per_s"],
        "client_topup_per_s": client["topups"]["per_s"],
        "http_vs_client_topups": round(ratio, 2),
        "http_topup_p50_ms": http["topups"]["p50_ms"],
        "http_topup_p99_ms": http["topups"]["p99_ms"],
        "client_topup_p99_ms": client["topups"]["p99_ms"],
        "http_order_per_s": http["orders"]["per_s"],
        "http_order_p50_ms": http["orders"]["p50_ms"],
        "http_order_p99_ms": http["orders"]["p99_ms"],
        "client_order_per_s": client["orders"]["per_s"],
        "client_order_p50_ms": client["orders"]["p50_ms"],
        "client_order_p99_ms": client["orders"]["p99_ms"],
        "api_cpu_ms_per_request": round(api_cpu * 1000 / (n + orders + 1), 3),
        "api_cpu_ms_per_topup": round(http["cpu_s"]["topups"] * 1000 / max(1, n), 3),
        "api_cpu_ms_per_order": round(http["cpu_s"]["orders"] * 1000 / max(1, orders), 3),
        "load_during": load_before,
    }


__all__ = ["http_vs_client"]
