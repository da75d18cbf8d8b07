"""429 over HTTP: a producer identity's own backlog is full (a namespace made with a bound of 10
events, no worker running), so the API answers ``429 backlog-full`` with ``Retry-After``, and
nothing past the bound is accepted: every 202 is applied once a worker runs, no 429'd write is,
and a refused Idempotency-Key sent again later is applied once. The API logs in as the shipped
``eventfleet-api`` user; the identity's writes land in its own inboxes only."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

pytest.importorskip("fastapi")

from eventfleet.api.state import ApiConfig
from eventfleet.ledger.shards import ShardCounts, user_shard
from eventfleet.ops.status import is_idle
from eventfleet.store.keys import Keys
from eventfleet.store.settings import Settings
from tests.api_helpers import bearer, call, served
from tests.secure_redis import SECRETS, cli_env, connect, ok, run_cli, wait_for
from tests.test_producer_acl import worker

BOUND = 10
COUNTS = ShardCounts(2, 2)
KEYS = Keys("eventfleet")
USER = 5


def test_a_full_backlog_is_429_and_nothing_past_it_is_accepted(port: int, tmp_path: Path) -> None:
    url = f"redis://127.0.0.1:{port}/0"
    admin = cli_env(url, "admin", extra={"EVENTFLEET_PRODUCER_BACKLOG": str(BOUND)})
    ok(run_cli(admin, "init", "--user-shards", "2", "--item-shards", "2"))
    added = urlsplit(
        json.loads(ok(run_cli(admin, "producers", "add", "shop", "--json")))["redis_url"]
    )
    shop = bearer(added.username or "", added.password or "")
    settings = Settings(
        redis_url=url,
        namespace="eventfleet",
        redis_username="eventfleet-api",
        redis_password_file=SECRETS / "eventfleet-api.password",
    )
    root = connect(port, "root")
    shard = user_shard(USER, COUNTS)
    answers: dict[str, tuple[int, dict[str, str], Any]] = {}
    with served(settings, ApiConfig(access_log=False)) as base:
        for n in range(BOUND + 6):
            key = f"topup-{n}"
            status, headers, doc = call(
                base,
                "POST",
                "/v1/topups",
                {"user": USER, "amount": 1},
                {**shop, "Idempotency-Key": key},
            )
            answers[key] = (status, headers, doc)
        accepted = [k for k, (s, _, _) in answers.items() if s == 202]
        refused = [k for k, (s, _, _) in answers.items() if s == 429]
        assert accepted == [f"topup-{n}" for n in range(BOUND)], answers
        assert len(refused) == 6, answers
        for key in refused:
            _, headers, doc = answers[key]
            assert int(headers["retry-after"]) >= 1
            assert doc["type"].endswith(":backlog-full") and "backlog full" in doc["detail"], doc
        # the identity's own inbox, never the shared one; the API kept its keys as itself
        assert int(root.llen(KEYS.inbox(shard, "shop"))) - 1 >= BOUND
        assert int(root.llen(KEYS.inbox(shard))) == 1
        kept = lambda: len(list(root.scan_iter("eventfleet:api:idem:*")))  # noqa: E731
        wait_for(
            "only the accepted keys kept (a refused one's claim dropped)",
            lambda: kept() == BOUND,
            10,
        )

        with worker(port, tmp_path):
            wait_for("the backlog applied", lambda: is_idle(root, KEYS, COUNTS), 60)
            status, _, doc = call(base, "GET", f"/v1/users/{USER}/balance", None, shop)
            assert (status, doc) == (200, {"user": USER, "balance": BOUND}), doc
            # a refused key, sent again once the backlog drained: accepted and applied once
            again = {**shop, "Idempotency-Key": refused[0]}
            for _ in range(2):
                status, headers, receipt = call(
                    base, "POST", "/v1/topups", {"user": USER, "amount": 1}, again
                )
                assert status == 202, receipt
            assert headers.get("idempotent-replayed") == "true"
            path = f"/v1/users/{USER}/balance?after={receipt['receipt']}&wait=20"
            status, _, doc = call(base, "GET", path, None, shop)
            assert (status, doc) == (200, {"user": USER, "balance": BOUND + 1}), doc
            wait_for("the fleet idle", lambda: is_idle(root, KEYS, COUNTS), 60)
    rows = {r["name"]: r for r in json.loads(ok(run_cli(admin, "producers", "list", "--json")))}
    assert rows["shop"]["waiting"] == 0
    assert json.loads(ok(run_cli(admin, "verify", "--json")))["ok"]
