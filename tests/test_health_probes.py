"""`/healthz` and `/readyz`: a paused worker, a Redis outage, a stuck loop, and a metrics
port already in use."""

from __future__ import annotations

import re
import socket
from pathlib import Path

import pytest
import redis

from eventfleet.ledger.events import Topup
from eventfleet.local.fleet import LocalFleet
from eventfleet.local.redisserver import LocalRedis
from eventfleet.producer.client import Producer
from eventfleet.store.keys import Keys
from eventfleet.worker.assignment import assign
from eventfleet.worker.health import HealthState, serve
from eventfleet.worker.metrics import exposition
from tests.fleet_utils import make_fleet, owners, setup_namespace
from tests.helpers import wait_for
from tests.live_worker import (
    Live,
    Scrape,
    fleet_of_two,
    http_status,
    scrape,
    start,
    until,
    wait_ready,
)


def test_a_paused_worker_does_not_answer_then_loses_its_leases_and_is_not_ready(
    r: redis.Redis,
    redis_server: LocalRedis,
    namespace: str,
    tmp_path: Path,
    fleet_factory: list[LocalFleet],
) -> None:
    counts = setup_namespace(r, namespace)
    fleet = fleet_of_two(
        redis_server.url,
        namespace,
        tmp_path,
        fleet_factory,
        counts,
        EVENTFLEET_LEASE_TTL_MS="3000",
    )
    a, b = start(fleet), start(fleet)
    settled = assign(counts.all_shards(), [a.id, b.id])
    assert set(settled.values()) == {a.id, b.id}
    for w in (a, b):
        wait_ready(w)
    wait_for(
        lambda: owners(r, namespace, counts) == settled,
        30,
        "the shards to settle on their rendezvous owners",
    )
    held = {s for s, o in settled.items() if o == a.id}
    fleet.pause(a.proc)
    # A stopped process cannot answer: a probe times out (the kernel still accepts the TCP
    # connection), which an orchestrator counts as a failure.
    assert a.get("/healthz", timeout=0.5) is None
    assert a.get("/readyz", timeout=0.5) is None
    wait_for(
        lambda: all(o == b.id for o in owners(r, namespace, counts).values()),
        30,
        "the other worker to take over the paused worker's shards",
    )
    fleet.resume(a.proc)
    # Its leases expired while it was stopped: not ready from the first answer on ...
    assert a.get("/readyz") == 503
    # ... until the other worker hands back what it targets and it holds that again.
    wait_ready(a)
    assert a.get("/healthz") == 200
    m = a.scrape()
    assert m.nonzero("eventfleet_lease_losses_total", "shard") == dict.fromkeys(held, 1.0)
    assert m.total("eventfleet_worker_shards_owned") > 0
    assert set(owners(r, namespace, counts).values()) == {a.id, b.id}
    # The probes that timed out while it was stopped are answered into closed sockets on
    # resuming: that must not print tracebacks between the JSON lines.
    a.assert_json_lines()
    lost = a.events("lease_lost")
    assert {e["shard"] for e in lost} == held
    assert all(e["reason"] and e["epoch"] >= 1 and e["worker_id"] == a.id for e in lost)
    wait_for(
        lambda: b.scrape().total("eventfleet_lease_handovers_total") > 0,
        10,
        "the other worker to count its hand-overs",
    )


def test_redis_outage_flips_readiness_and_counts_retries_and_errors(
    own_redis: LocalRedis, namespace: str, tmp_path: Path, fleet_factory: list[LocalFleet]
) -> None:
    r = redis.Redis.from_url(own_redis.url)
    counts = setup_namespace(r, namespace)
    fleet = make_fleet(own_redis.url, namespace, tmp_path, fleet_factory)
    a = start(fleet, EVENTFLEET_LOG_LEVEL="warning")
    wait_ready(a)
    before = a.scrape()
    assert before.total("eventfleet_redis_errors_total") == 0

    own_redis.stop()
    wait_for(lambda: a.get("/readyz") == 503, 30, "readiness to drop while Redis is down")

    # Calls are retried until their deadline, then count as errors.
    def failed() -> Scrape | None:
        m = a.scrape()
        return m if m.total("eventfleet_redis_errors_total") else None

    m = until(failed, 30, "a Redis call to fail after its retries")
    assert m.total("eventfleet_redis_retries_total") > 0
    assert a.get("/readyz") == 503
    # The loop still ticks while it retries: liveness holds, so no orchestrator restarts
    # every worker for a Redis outage.
    assert a.get("/healthz") == 200

    own_redis.start()
    wait_ready(a)
    applied = m.total("eventfleet_events_applied_total")
    Producer(r, Keys(namespace), counts).publish([Topup(user_id=1, amount=5)])
    wait_for(
        lambda: a.scrape().total("eventfleet_events_applied_total") == applied + 1,
        30,
        "the worker to apply events again",
    )
    # EVENTFLEET_LOG_LEVEL=warning: the outage is logged, the routine info lines are not.
    lines = a.logs()
    names = {e["event"] for e in lines}
    assert {"redis_retry", "redis_unavailable"} <= names
    assert all(e["level"] in ("warning", "error") for e in lines), names
    retry = next(e for e in lines if e["event"] == "redis_retry")
    assert retry["operation"] and retry["attempt"] >= 1 and retry["error"]
    for e in lines:  # a retried call about one shard names it
        if e["event"] == "redis_retry" and e["operation"] in ("snapshot", "release"):
            assert re.fullmatch(r"[ui][0-9]+", e["shard"]) and e["epoch"] >= 1, e
    assert all(e["worker_id"] == a.id for e in lines)


def test_a_metrics_port_in_use_is_one_fatal_line(
    r: redis.Redis,
    redis_server: LocalRedis,
    namespace: str,
    tmp_path: Path,
    fleet_factory: list[LocalFleet],
) -> None:
    setup_namespace(r, namespace)
    fleet = make_fleet(redis_server.url, namespace, tmp_path, fleet_factory)
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = int(taken.getsockname()[1])
        w = fleet.start({"EVENTFLEET_METRICS_PORT": str(port)})
        assert w.proc.wait(timeout=30) == 2
    worker = Live(w, port)
    worker.assert_json_lines()
    [fatal] = worker.events("fatal")
    assert str(port) in fatal["error"] and fatal["level"] == "error"


def test_healthz_turns_503_when_the_loop_stops_ticking(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A loop stuck in one call cannot be made on demand in a real worker; the server's
    rule is checked here: /healthz reports the age of the last tick, /readyz needs it too."""
    health = HealthState(stale_after_s=0.3)
    health.redis_ok = health.holds_targets = True
    server = serve(health, "127.0.0.1", 0, exposition("ns"))  # what the worker serves
    port = int(server.server_address[1])
    try:
        health.tick()
        assert http_status(port, "/healthz") == 200
        wait_for(lambda: http_status(port, "/healthz") == 503, 10, "a stale loop to be reported")
        assert http_status(port, "/readyz") == 503
        health.tick()
        assert http_status(port, "/healthz") == 200
        assert http_status(port, "/nope") == 404
        assert "eventfleet_build_info" in scrape(port).families
        # a prober that hung up before the answer is no error: nothing on stderr
        with socket.socket() as gone:
            try:
                raise BrokenPipeError(32, "Broken pipe")
            except BrokenPipeError:
                server.handle_error(gone, ("127.0.0.1", 1))
        assert "Traceback" not in capsys.readouterr().err
    finally:
        server.shutdown()
        server.server_close()
