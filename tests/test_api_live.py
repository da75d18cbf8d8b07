"""The HTTP API as a process (``eventfleet api``) on Redis as we ship it (flags, ACL file,
every process logged in as its user: the API's own login is eventfleet-api, tokens are the
producer's and the reader's credentials) with a worker applying: outcomes long-polled,
read-your-writes, the README's curl examples, schemathesis against the live API, graceful
shutdown, and Redis going away (503) and coming back."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi")

from eventfleet.local.api import LocalApi
from eventfleet.local.fleet import LocalFleet
from eventfleet.local.redisserver import LocalRedis
from tests.api_helpers import bearer, call
from tests.helpers import wait_for
from tests.shipped import init_shipped

ROOT = Path(__file__).resolve().parent.parent
NS = "eventfleet"


@dataclass
class Live:
    server: LocalRedis
    fleet: LocalFleet
    api: LocalApi
    producer: dict[str, str]
    reader: dict[str, str]
    tmp: Path

    @property
    def token(self) -> str:
        return self.producer["Authorization"].removeprefix("Bearer ")


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    tmp = tmp_path_factory.mktemp("api-live")
    server = LocalRedis(workdir=tmp / "redis", shipped=True).start()
    assert server.logins is not None
    init_shipped(server, NS)
    fleet = LocalFleet(server.url, NS, tmp / "logs", env=server.logins.env("worker"))
    fleet.start()
    api = LocalApi(server.url, NS, tmp / "api.log", env=server.logins.env("api"))
    api.start()
    lg = server.logins
    yield Live(
        server,
        fleet,
        api,
        bearer(lg.user("producer"), lg.password("producer")),
        bearer(lg.user("reader"), lg.password("reader")),
        tmp,
    )
    api.stop()
    fleet.stop_all()
    server.close()


def test_orders_long_poll_and_read_your_writes(live: Live) -> None:
    base, who = live.api.url, live.producer
    assert call(base, "POST", "/v1/items", {"item": "pear", "count": 5, "price": 20}, who)[0] == 202
    status, _, topup = call(base, "POST", "/v1/topups", {"user": 11, "amount": 100}, who)
    assert status == 202
    status, _, doc = call(base, "GET", f"/v1/users/11/balance?after={topup['receipt']}", None, who)
    assert (status, doc) == (200, {"user": 11, "balance": 100})
    order = {"user": 11, "item": "pear", "qty": 2, "order_id": "o-http-1"}
    status, _, out = call(base, "POST", "/v1/orders?wait=10", order, who)
    assert status == 200 and out["status"] == "confirmed" and out["amount"] == 40, out
    status, _, again = call(base, "GET", "/v1/users/11/orders/o-http-1?wait=5", None, live.reader)
    assert (status, again["status"]) == (200, "confirmed")
    status, _, dup = call(base, "POST", "/v1/orders?wait=10", order, who)
    assert status == 200 and dup["status"] == "duplicate" and dup["first"] == "confirmed"
    status, _, item = call(base, "GET", f"/v1/items/pear?after={out['receipt']}", None, who)
    assert status == 200 and item["remain"] in (1, 3)  # the repeat's stock is going back
    wait_for(
        lambda: call(base, "GET", "/v1/items/pear", None, who)[2]["remain"] == 3,
        timeout=10,
        what="the repeat's stock released",
    )
    assert call(base, "GET", "/v1/users/11/balance", None, live.reader)[2]["balance"] == 60


def test_a_token_writes_only_what_its_redis_user_may(live: Live) -> None:
    base = live.api.url
    status, headers, doc = call(base, "POST", "/v1/topups", {"user": 1, "amount": 1}, live.reader)
    assert status == 403 and doc["type"].endswith(":forbidden"), doc
    # the API's own login as a token: it may keep Idempotency-Keys, not touch the ledger
    assert live.server.logins is not None
    own = bearer(live.server.logins.user("api"), live.server.logins.password("api"))
    status, _, doc = call(base, "POST", "/v1/topups", {"user": 1, "amount": 1}, own)
    assert status == 403 and doc["type"].endswith(":forbidden"), doc
    assert call(base, "GET", "/v1/users/1/balance", None, own)[0] == 403
    wrong = bearer("eventfleet-producer", "not-the-password")
    status, headers, _ = call(base, "POST", "/v1/topups", {"user": 1, "amount": 1}, wrong)
    assert status == 401 and "bearer" in headers["www-authenticate"].lower()
    assert call(base, "GET", "/v1/users/1/balance", None, wrong)[0] == 401


def readme_http_example() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    found = re.search(r"```bash\n(# README example: over HTTP.*?)```", text, re.S)
    assert found, "README: the curl example block is missing"
    return found.group(1)


def test_the_readme_curl_examples_run(live: Live, tmp_path: Path) -> None:
    script = readme_http_example()
    assert script.count("curl ") >= 6
    env = {**os.environ, "API": live.api.url, "TOKEN": live.token}
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert '"balance":1000' in out and '"status":"confirmed"' in out, out
    assert '"remain":7' in out and "invalid-request" in out, out


def test_schemathesis_finds_nothing(live: Live, tmp_path: Path) -> None:
    """Every operation, negative cases included, against the live API with its waits cut to
    0.2 s (so a random receipt's read-your-write costs little); bounded examples."""
    api = LocalApi(
        live.server.url,
        NS,
        tmp_path / "api.log",
        env=live.server.logins.env("api") if live.server.logins else {},
        args=("--max-wait", "0.2", "--no-access-log"),
    ).start()
    try:
        done = subprocess.run(
            [
                sys.executable, "-m", "schemathesis.cli", "run", f"{api.url}/openapi.json",
                "--checks", "all", "--phases", "examples,coverage,fuzzing,stateful",
                "--max-examples", "12", "--seed", "7", "-w", "2",
                "-H", live.producer["Authorization"].join(("Authorization: ", "")),
            ],
            cwd=tmp_path, capture_output=True, text=True, timeout=240, check=False,
        )  # fmt: skip
    finally:
        assert api.stop() == 0
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    assert "No issues found" in done.stdout, done.stdout[-3000:]


def test_sigterm_lets_requests_in_flight_finish(live: Live, tmp_path: Path) -> None:
    api = LocalApi(
        live.server.url,
        NS,
        tmp_path / "api.log",
        env=live.server.logins.env("api") if live.server.logins else {},
    ).start()
    got: list[Any] = []

    def poll() -> None:
        got.append(call(api.url, "GET", "/v1/users/5/orders/never?wait=2", None, live.reader))

    t = threading.Thread(target=poll)
    t.start()
    wait_for(
        lambda: (
            'eventfleet_api_requests_in_flight{eventfleet_namespace="eventfleet"} 1.0'
            in call(api.url, "GET", "/metrics")[2]
        ),
        timeout=10,
        what="the long-poll in flight",
    )
    assert api.proc is not None
    api.proc.send_signal(signal.SIGTERM)
    t.join(timeout=20)
    assert api.proc.wait(timeout=20) == 0
    assert got and got[0][0] == 202 and got[0][2]["status"] == "pending"


def test_redis_down_is_503_and_the_api_recovers(live: Live) -> None:
    base, who = live.api.url, live.producer
    live.server.stop()
    try:
        status, headers, doc = call(base, "POST", "/v1/topups", {"user": 2, "amount": 1}, who)
        assert status == 503 and int(headers["retry-after"]) >= 1, doc
        assert call(base, "GET", "/readyz")[0] == 503
    finally:
        live.server.start()
    wait_for(lambda: call(base, "GET", "/readyz")[0] == 200, timeout=30, what="ready again")
    wait_for(
        lambda: call(base, "POST", "/v1/topups", {"user": 2, "amount": 1}, who)[0] == 202,
        timeout=30,
        what="a top-up accepted again",
    )
