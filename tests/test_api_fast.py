"""The HTTP API against the session's redis-server, served on a thread of this process (no
worker): the committed OpenAPI document, tokens (401/403), bodies refused with nothing
published, Idempotency-Key replays and conflicts per identity, the reads' answers that need no
worker, request ids, metrics, readiness, and how the client's errors map to statuses."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

pytest.importorskip("fastapi")

from eventfleet.api import idempotency
from eventfleet.api.auth import parse_token
from eventfleet.api.coalesce import Coalesced
from eventfleet.api.corked import Corked
from eventfleet.api.models import parse_receipt, receipt_text
from eventfleet.api.problems import Problem, from_client
from eventfleet.api.serve import openapi_text
from eventfleet.api.state import MAX_BODY
from eventfleet.client.errors import (
    BacklogFull,
    ConfigurationError,
    Unavailable,
    WaitTimeout,
)
from eventfleet.client.results import Receipt
from eventfleet.ledger.shards import ShardCounts
from eventfleet.local.redisserver import LocalRedis
from eventfleet.store.keys import Keys
from eventfleet.store.namespace import init_namespace
from eventfleet.store.settings import Settings
from tests.api_helpers import bearer, call, served

ROOT = Path(__file__).resolve().parent.parent


def test_the_committed_openapi_document_is_what_the_code_generates() -> None:
    committed = (ROOT / "docs" / "openapi.json").read_text(encoding="utf-8")
    assert committed == openapi_text(), (
        "docs/openapi.json is stale: eventfleet api --print-openapi > docs/openapi.json"
    )


def test_tokens_receipts_and_error_mapping() -> None:
    assert parse_token("Bearer billing:pa:ss") == ("billing", "pa:ss")
    for bad in (None, "", "Basic x:y", "Bearer ", "Bearer nocolon", "Bearer :pw", "Bearer u:"):
        with pytest.raises(Problem) as err:
            parse_token(bad)
        assert err.value.status == 401 and "WWW-Authenticate" in err.value.headers
    r = Receipt("u12", "p:ab.c-d:e", 42)
    assert receipt_text(r) == "u12~42~p:ab.c-d:e" and parse_receipt(receipt_text(r)) == r
    for bad in ("u1~0~p:x", "x1~1~p:x", "u1~1~", "u1-1-p:x", "u1~1~a b"):
        with pytest.raises(ValueError):
            parse_receipt(bad)
    full = from_client(BacklogFull("backlog full", retry_after=2.5))
    assert (full.status, full.headers["Retry-After"]) == (429, "3")
    assert from_client(Unavailable("down")).status == 503
    assert from_client(ConfigurationError("the Redis user lacks a permission (x)")).status == 403
    assert from_client(WaitTimeout("late")).status == 409
    assert idempotency.ledger_key("a", "k") != idempotency.ledger_key("b", "k")
    same = idempotency.fingerprint("POST", "/v1/topups", b'{"user":1,"amount":2}')
    assert same == idempotency.fingerprint("POST", "/v1/topups", b'{ "amount":2, "user":1 }')


@pytest.fixture
def api(redis_server: LocalRedis, r: redis.Redis) -> Iterator[tuple[str, str]]:
    """(base URL, namespace): a namespace of 2 + 2 shards and the API on it."""
    ns = f"api{uuid.uuid4().hex[:6]}"
    init_namespace(r, Keys(ns), ShardCounts(2, 2))
    with served(Settings(redis_url=redis_server.url, namespace=ns)) as base:
        yield base, ns


@pytest.fixture
def users(r: redis.Redis) -> Iterator[dict[str, dict[str, str]]]:
    """Two ACL users of this test on the session's Redis: a writer, and a reader that may only
    read the model (as the shipped reader)."""
    tag = uuid.uuid4().hex[:6]
    made = {
        "writer": (f"w{tag}", ["~*", "+@all"]),
        "other": (f"o{tag}", ["~*", "+@all"]),
        "reader": (
            f"r{tag}",
            ["~*", "-@all", "+hget", "+hmget", "+hgetall", "+ping", "+hello", "+client|setname"],
        ),
    }
    for name, rights in made.values():
        r.acl_setuser(name, enabled=True, passwords=[f"+pw-{name}"], keys=[], commands=[])
        r.execute_command("ACL", "SETUSER", name, *rights)
    yield {role: bearer(name, f"pw-{name}") for role, (name, _) in made.items()}
    for name, _ in made.values():
        r.acl_deluser(name)


def inboxed(r: redis.Redis, ns: str) -> int:
    """Elements in the namespace's inboxes (each starts with a marker of its own)."""
    return sum(int(r.llen(k)) for k in r.scan_iter(match=f"{ns}:*inbox*") if r.type(k) == b"list")


def test_tokens_401_and_403(api: tuple[str, str], users: dict[str, dict[str, str]]) -> None:
    base, _ns = api
    body = {"user": 7, "amount": 5}
    status, headers, doc = call(base, "POST", "/v1/topups", body)
    assert status == 401 and headers["www-authenticate"].startswith("Bearer")
    assert doc["type"].endswith(":unauthorized") and headers["content-type"].startswith(
        "application/problem+json"
    )
    wrong = {"Authorization": users["writer"]["Authorization"] + "x"}
    assert call(base, "POST", "/v1/topups", body, wrong)[0] == 401
    assert call(base, "POST", "/v1/topups", body, {"Authorization": "Bearer junk"})[0] == 401
    status, _, doc = call(base, "POST", "/v1/topups", body, users["reader"])
    assert status == 403, doc
    assert call(base, "GET", "/v1/users/7/balance", None, users["reader"])[0] == 200
    assert call(base, "POST", "/v1/topups", body, users["writer"])[0] == 202


def test_bad_bodies_are_refused_and_nothing_is_published(
    api: tuple[str, str], users: dict[str, dict[str, str]], r: redis.Redis
) -> None:
    base, ns = api
    who = users["writer"]
    before = inboxed(r, ns)
    cases = [
        (b'{"user": 7, "amount": ', {}, 400, "not valid JSON"),
        (b'{"user": 7, "amount": 5, "extra": 1}', {}, 422, "extra"),
        (b'{"user": 7, "amount": 0}', {}, 422, "amount"),
        (b'{"user": 7, "amount": -5}', {}, 422, "amount"),
        (b'{"user": "7", "amount": 5}', {}, 422, "user"),
        (b'{"user": 7, "amount": 5.5}', {}, 422, "amount"),
        (b"[1, 2]", {}, 422, "object"),
        (b'{"user": 7}', {}, 422, "amount"),
        (b'{"user": 7, "amount": 5}', {"Content-Type": "text/plain"}, 415, "application/json"),
        (b'{"user": 7, "amount": 5}', {"Idempotency-Key": "bad key!"}, 400, "Idempotency-Key"),
        (b" " * (MAX_BODY + 1), {}, 413, str(MAX_BODY)),
    ]
    for raw, extra, want, words in cases:
        headers = {"Content-Type": "application/json", **who, **extra}
        status, got, doc = call(base, "POST", "/v1/topups", raw=raw, headers=headers)
        assert status == want, (raw[:60], doc)
        assert words in doc["detail"], doc
        assert got["content-type"] == "application/problem+json"
    assert (
        call(base, "POST", "/v1/orders?wait=99", {"user": 1, "item": "a", "qty": 1}, who)[0] == 422
    )
    assert inboxed(r, ns) == before


def test_idempotency_keys_replay_conflict_and_are_per_identity(
    api: tuple[str, str], users: dict[str, dict[str, str]], r: redis.Redis
) -> None:
    base, ns = api
    before = inboxed(r, ns)
    key = {"Idempotency-Key": "invoice-1"}
    body = {"user": 7, "amount": 5}
    first = call(base, "POST", "/v1/topups", body, {**users["writer"], **key})
    again = call(base, "POST", "/v1/topups", {"amount": 5, "user": 7}, {**users["writer"], **key})
    assert first[0] == again[0] == 202 and first[2] == again[2]
    assert again[1]["idempotent-replayed"] == "true" and "idempotent-replayed" not in first[1]
    status, _, doc = call(
        base, "POST", "/v1/topups", {**body, "amount": 6}, {**users["writer"], **key}
    )
    assert status == 409 and doc["type"].endswith(":key-reused")
    other = call(base, "POST", "/v1/topups", body, {**users["other"], **key})
    assert other[0] == 202 and other[2]["receipt"] != first[2]["receipt"]
    assert inboxed(r, ns) == before + 2  # one per identity
    kept = list(r.scan_iter(match=f"{ns}:api:idem:*"))
    assert len(kept) == 2 and all(0 < int(r.ttl(k)) <= 86400 for k in kept)
    order = {"user": 7, "item": "apple", "qty": 1}
    assert call(base, "POST", "/v1/orders", order, {**users["writer"], **key})[0] == 409
    placed = call(base, "POST", "/v1/orders", order, {**users["writer"], "Idempotency-Key": "o1"})
    assert placed[0] == 202 and placed[2]["order_id"].startswith("k-")  # derived from the key
    receipt = parse_receipt(first[2]["receipt"])
    assert receipt.shard.startswith("u") and receipt.seq >= 1


def test_reads_that_need_no_worker(api: tuple[str, str], users: dict[str, dict[str, str]]) -> None:
    base, _ns = api
    who = users["reader"]
    assert call(base, "GET", "/v1/users/7/balance", None, who)[2] == {"user": 7, "balance": 0}
    status, _, doc = call(base, "GET", "/v1/items/nope", None, who)
    assert status == 404 and doc["type"].endswith(":not-found")
    status, _, doc = call(base, "GET", "/v1/users/7/orders/o-1?wait=0", None, who)
    assert status == 202 and doc["status"] == "pending"
    assert call(base, "GET", "/v1/users/7/balance?after=garbage", None, who)[0] == 422
    status, headers, doc = call(base, "GET", "/v1/users/7/balance?after=u1~9~p:x&wait=0", None, who)
    assert status == 409 and doc["type"].endswith(":not-applied-yet") and headers["retry-after"]
    assert call(base, "GET", "/v1/users/0/balance", None, who)[0] == 422
    assert call(base, "DELETE", "/v1/users/7/balance", None, who)[0] == 405


def test_request_ids_metrics_and_readiness(
    api: tuple[str, str], redis_server: LocalRedis, users: dict[str, dict[str, str]]
) -> None:
    base, _ns = api
    status, headers, _ = call(base, "GET", "/healthz", None, {"X-Request-Id": "req-42"})
    assert status == 200 and headers["x-request-id"] == "req-42"
    made = call(base, "GET", "/healthz")[1]["x-request-id"]
    assert len(made) == 32
    call(base, "GET", "/v1/users/3/balance", None, users["reader"])
    # a write, answered past FastAPI (api.front): the same id, problem and metrics
    bad = {**users["writer"], "X-Request-Id": "req-43"}
    status, headers, doc = call(base, "POST", "/v1/topups", {"user": 3, "amount": 0}, bad)
    assert status == 422 and headers["x-request-id"] == doc["request_id"] == "req-43"
    assert doc["instance"] == "/v1/topups" and doc["type"].endswith(":invalid-request")
    status, headers, doc = call(base, "GET", "/v1/topups", None, users["writer"])
    assert status == 405 and doc["type"].endswith(":method-not-allowed") and doc["request_id"]
    status, _, text = call(base, "GET", "/metrics")
    assert status == 200
    assert 'route="/v1/users/{user}/balance"' in text and 'code="200"' in text
    assert 'code="422"' in text and 'route="/v1/topups"' in text
    assert "eventfleet_api_request_duration_seconds_bucket" in text
    assert call(base, "GET", "/readyz")[0] == 200
    with served(Settings(redis_url=redis_server.url, namespace="never-made")) as other:
        assert call(other, "GET", "/readyz")[0] == 503


def test_coalesced_calls_go_together_and_fail_one_by_one_or_together() -> None:
    """``coalesce.Coalesced``: calls made while a round trip is out go in the next one; an
    exception as a reply is that call's error, a round trip that raises is every call's."""
    trips: list[list[int]] = []

    async def trip(batch: list[int]) -> list[object]:
        trips.append(batch)
        await asyncio.sleep(0.01)
        if 13 in batch:
            raise ConnectionError("down")
        return [ValueError(x) if x < 0 else x * 2 for x in batch]

    async def main() -> None:
        together = Coalesced(trip)
        first = together.call(1)
        await asyncio.sleep(0)  # the first trip is out
        rest = [together.call(x) for x in (2, -3, 4)]
        assert await first == 2
        got = await asyncio.gather(*rest, return_exceptions=True)
        assert got[0] == 4 and isinstance(got[1], ValueError) and got[2] == 8
        failed = await asyncio.gather(together.call(13), together.call(5), return_exceptions=True)
        assert all(isinstance(x, ConnectionError) for x in failed)
        assert await together.call(6) == 12  # goes on after a failed trip

    asyncio.run(main())
    assert trips == [[1], [2, -3, 4], [13, 5], [6]]


def test_a_corked_transport_sends_a_turns_writes_as_one() -> None:
    """``corked.Corked``: uvicorn's head and body writes of one turn leave in one write, at the
    end of the turn or when the connection closes; the rest is the transport's."""

    class Recorder:
        def __init__(self) -> None:
            self.writes: list[bytes] = []
            self.closed = False

        def write(self, data: bytes) -> None:
            self.writes.append(data)

        def is_closing(self) -> bool:
            return self.closed

        def close(self) -> None:
            self.closed = True

        def get_extra_info(self, name: str) -> str:
            return f"info:{name}"

    async def main() -> None:
        t = Recorder()
        c = Corked(t)  # type: ignore[arg-type]
        c.write(b"HTTP/1.1 202 Accepted\r\n\r\n")
        c.write(memoryview(b"{}"))
        assert t.writes == []
        await asyncio.sleep(0)
        assert t.writes == [b"HTTP/1.1 202 Accepted\r\n\r\n{}"]
        c.writelines([b"a", b"b"])
        c.close()  # flushed first
        assert t.writes[1:] == [b"ab"] and t.closed
        assert c.get_extra_info("peername") == "info:peername"
        await asyncio.sleep(0)
        assert len(t.writes) == 2

    asyncio.run(main())
