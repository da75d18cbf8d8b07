"""What a newcomer meets in the first hour (issue 27): a second worker on one host, exit
codes of mistyped input, dead letters that never decode, every bad line of a file, an order
that is not there, a health probe of a dead port."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import redis

from eventfleet.local.fleet import LocalFleet
from eventfleet.local.redisserver import LocalRedis, free_port
from eventfleet.producer.files import SHOWN_BAD_LINES
from eventfleet.store.keys import EVENT_FIELD, Keys
from eventfleet.store.settings import Settings
from eventfleet.worker.health import HealthState
from eventfleet.worker.main import serve_metrics
from tests.fleet_utils import FAST, make_fleet, setup_namespace
from tests.helpers import CliResult, cli, cli_json, wait_for
from tests.live_worker import http_status

DEFAULT_METRICS_PORT = 9108


def test_a_second_worker_on_the_default_port_serves_on_a_free_one() -> None:
    health = HealthState(stale_after_s=5)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = int(taken.getsockname()[1])
        settings = Settings(metrics_host="127.0.0.1", metrics_port=port)
        server = serve_metrics(health, settings, fallback=True)
        try:
            got = int(server.server_address[1])
            assert got not in (port, 0)
        finally:
            server.shutdown()
            server.server_close()
        with pytest.raises(OSError):  # a port set on purpose must be that port
            serve_metrics(health, settings, fallback=False)


@pytest.mark.fleet  # a worker process
def test_a_worker_whose_default_metrics_port_is_taken_serves_on_another(
    r: redis.Redis, namespace: str, env: dict[str, str], tmp_path: Path
) -> None:
    """As a second `eventfleet worker` on one host finds 9108: held here (or by anyone else,
    which does as well), the worker starts anyway and says where it serves."""
    setup_namespace(r, namespace, 2, 2)
    holder = socket.socket()
    with contextlib.suppress(OSError):  # already taken by someone else: as good
        holder.bind(("0.0.0.0", DEFAULT_METRICS_PORT))
        holder.listen()
    child_env = {k: v for k, v in os.environ.items() if not k.startswith("EVENTFLEET_")}
    child_env.update(env, EVENTFLEET_LOG_FORMAT="json", **FAST)
    log = tmp_path / "worker.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "eventfleet", "worker"], env=child_env, stdout=out, stderr=out
        )
    try:

        def taken() -> dict[str, Any] | None:
            assert proc.poll() is None, log.read_text()
            for line in log.read_text().splitlines():
                if '"metrics_port_taken"' in line:
                    return dict(json.loads(line))
            return None

        event = wait_for(taken, 30, "the worker to log metrics_port_taken")
        assert event is not None
        port = event["metrics_port"]
        assert event["wanted"] == DEFAULT_METRICS_PORT and port != DEFAULT_METRICS_PORT
        wait_for(lambda: http_status(port, "/healthz") == 200, 30, "its /healthz to answer")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0, log.read_text()
    finally:
        holder.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def one_line_exit(res: CliResult, code: int, *words: str) -> None:
    assert res.returncode == code, (res.returncode, res.stdout, res.stderr)
    assert res.stderr.count("\n") == 1 and res.stderr.startswith("error: "), res.stderr
    assert all(w in res.stderr for w in words), res.stderr


def test_mistyped_input_exits_2_with_one_line(env: dict[str, str], tmp_path: Path) -> None:
    one_line_exit(cli("status", env=env, check=False), 2, "not initialised")
    one_line_exit(cli("dlq", "list", env=env, check=False), 2, "eventfleet init")
    cli("init", "--user-shards", "2", "--item-shards", "2", env=env)
    res = cli("init", "--user-shards", "3", "--item-shards", "2", env=env, check=False)
    one_line_exit(res, 2, "cannot be changed")
    res = cli("dlq", "redrive", "--shard", "u99", env=env, check=False)
    one_line_exit(res, 2, "u99", "u0-u1")
    res = cli("dlq", "redrive", "--reason", "nonsense", env=env, check=False)
    one_line_exit(res, 2, "nonsense", "bad_json")
    res = cli("dlq", "discard", "--shard", "i7", "--undecodable", env=env, check=False)
    one_line_exit(res, 2, "i7")
    one_line_exit(cli("dlq", "discard", env=env, check=False), 2, "--undecodable")
    missing = tmp_path / "nonexistent"
    res = cli("verify", "--archive", str(missing), env=env, check=False)
    one_line_exit(res, 2, str(missing), "does not exist")
    (tmp_path / "empty").mkdir()
    res = cli("verify", "--archive", str(tmp_path / "empty"), env=env, check=False)
    one_line_exit(res, 2, "not an eventfleet archive")


def test_an_order_without_an_outcome_exits_4(env: dict[str, str]) -> None:
    cli("init", "--user-shards", "2", "--item-shards", "2", env=env)
    res = cli("state", "order", "o-nope", env=env, check=False)
    assert res.returncode == 4 and "o-nope: no outcome" in res.stdout
    res = cli("state", "order", "o-nope", "--json", env=env, check=False)
    assert res.returncode == 4 and json.loads(res.stdout)["outcome"] is None


def test_health_on_a_dead_port_says_what_failed() -> None:
    port = free_port()
    res = cli("health", "--port", str(port), check=False)
    assert res.returncode == 1
    assert f"connection refused on 127.0.0.1:{port}" in res.stdout


def test_produce_file_names_every_bad_line_up_to_a_bound(
    r: redis.Redis, env: dict[str, str], tmp_path: Path
) -> None:
    cli("init", "--user-shards", "2", "--item-shards", "2", env=env)
    keys = Keys(env["EVENTFLEET_NAMESPACE"])
    inboxes = [keys.inbox(s) for s in ("u0", "u1", "i0", "i1")]
    before = sum(r.llen(i) for i in inboxes)
    good = '{"type": "topup", "user_id": 1, "amount": 100}\n'
    f = tmp_path / "events.jsonl"
    f.write_text(good + "nope\n" + good + '{"type": "topup", "user_id": 1}\n' + good)
    res = cli("produce", "file", str(f), env=env, check=False)
    assert res.returncode == 2
    assert "2 bad lines" in res.stderr and "nothing was published" in res.stderr
    assert "line 2: not valid JSON" in res.stderr and "line 4:" in res.stderr
    assert "amount" in res.stderr
    many = tmp_path / "many.jsonl"
    many.write_text("nope\n" * (SHOWN_BAD_LINES + 7))
    res = cli("produce", "file", str(many), env=env, check=False)
    assert res.returncode == 2
    assert f"{SHOWN_BAD_LINES + 7} bad lines" in res.stderr
    assert res.stderr.count("not valid JSON") == SHOWN_BAD_LINES
    assert "... and 7 more" in res.stderr
    assert sum(r.llen(i) for i in inboxes) == before


def test_a_dead_letter_that_never_decodes_can_be_discarded(
    r: redis.Redis,
    env: dict[str, str],
    redis_server: LocalRedis,
    tmp_path: Path,
    fleet_factory: list[LocalFleet],
) -> None:
    cli("init", "--user-shards", "2", "--item-shards", "2", env=env)
    keys = Keys(env["EVENTFLEET_NAMESPACE"])
    r.xadd(keys.events("u0"), {EVENT_FIELD: b"not json"})
    r.xadd(keys.events("u0"), {EVENT_FIELD: b"{broken"})
    r.xadd(keys.events("u1"), {EVENT_FIELD: b"[1]"})
    fleet = make_fleet(redis_server.url, env["EVENTFLEET_NAMESPACE"], tmp_path, fleet_factory)
    fleet.start()
    cli("status", "--wait-idle", "--timeout", "60", env=env)
    dead = cli_json("dlq", "list", "--json", env=env)
    assert len(dead) == 3
    first = next(d for d in dead if d["shard"] == "u0")
    res = cli("dlq", "discard", "nope-0", "--shard", "u0", env=env, check=False)
    one_line_exit(res, 2, "nope-0")
    # the shard named: entries of two streams added in the same millisecond share their id
    out = cli(
        "dlq", "discard", first["entry_id"], "--shard", "u0", "--note", "garbage from a test",
        env=env,
    )  # fmt: skip
    assert "discarded 1" in out.stdout
    assert len(cli_json("dlq", "list", "--json", env=env)) == 2
    dry = cli_json(
        "dlq", "discard", "--undecodable", "--shard", "u0", "--dry-run", "--json", env=env
    )
    assert dry["discarded"] == 1 and dry["dry_run"]
    assert cli_json("dlq", "discard", "--undecodable", "--json", env=env)["discarded"] == 2
    assert cli_json("dlq", "list", "--json", env=env) == []
    every = cli_json("dlq", "list", "--all", "--json", env=env)
    assert len(every) == 3 and all(d["discarded"] for d in every)
    assert cli("dlq", "list", "--all", env=env).stdout.count("[discarded]") == 3
    note = json.loads(r.hget(f"{keys.ns}:{{u0}}:dlq:discarded", first["dlq_id"]) or b"{}")
    assert note["note"] == "garbage from a test" and note["at_ms"] > 0
    redriven = cli_json("dlq", "redrive", "--json", env=env)
    assert redriven["redriven"] == 0 and redriven["still_invalid"] == []
    cli("verify", env=env)  # the letters are still in their streams: verify finds them all
