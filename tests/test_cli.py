"""The command line: init, produce, state, status, dlq, and clear errors for user mistakes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import redis

from eventfleet.cli import context
from eventfleet.local.fleet import LocalFleet
from eventfleet.local.redisserver import LocalRedis, free_port
from eventfleet.store.keys import Keys
from tests.fleet_utils import make_fleet
from tests.helpers import cli, cli_json, cli_process


def test_init_is_idempotent_and_refuses_other_counts(r: redis.Redis, env: dict[str, str]) -> None:
    out = cli("init", "--user-shards", "3", "--item-shards", "2", env=env).stdout
    assert "created" in out
    again = cli("init", "--user-shards", "3", "--item-shards", "2", env=env).stdout
    assert "already initialised" in again
    bad = cli("init", "--user-shards", "4", "--item-shards", "2", env=env, check=False)
    assert bad.returncode != 0
    assert bad.stderr.count("\n") == 1 and "cannot be changed" in bad.stderr
    assert "Traceback" not in bad.stderr
    keys = Keys(env["EVENTFLEET_NAMESPACE"])
    assert r.hgetall(keys.meta)[b"user_shards"] == b"3"
    assert all(r.exists(keys.events(s)) for s in ["u0", "u1", "u2", "i0", "i1"])
    assert r.xinfo_groups(keys.events("u2"))[0]["name"] == b"workers"


def test_produce_maps_the_clients_errors_to_one_line(
    r: redis.Redis, env: dict[str, str], tmp_path: Path
) -> None:
    """Every produce command publishes through eventfleet.Client: a namespace that is not
    there is bad input (exit 2, one line), as are a bad key or source name before connecting."""
    for args in (
        ["topup", "--user", "1", "--amount", "1"],
        ["order", "--user", "1", "--item", "x", "--qty", "1", "--wait", "--timeout", "0"],
        ["file", "-", "--source", "nightly"],
        ["load", "--events", "5"],
    ):
        res = cli("produce", *args, env=env, input="", check=False)
        assert res.returncode == 2, (args, res.stderr)
        assert res.stderr.count("\n") == 1 and "not initialised" in res.stderr, res.stderr
    down = {**env, "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}
    for args in (
        ["topup", "--user", "1", "--amount", "1", "--key", "not a key"],
        ["file", "-", "--source", "not a name"],
    ):
        res = cli("produce", *args, env=down, input="", check=False)
        assert res.returncode == 2 and res.stderr.count("\n") == 1, (args, res.stderr)
    assert r.dbsize() == 0  # nothing was created


def test_defaults_are_16_and_16(r: redis.Redis, env: dict[str, str]) -> None:
    cli("init", env=env)
    assert r.hgetall(Keys(env["EVENTFLEET_NAMESPACE"]).meta)[b"item_shards"] == b"16"


def test_produce_file_with_a_bad_line_exits_2_and_publishes_nothing(
    r: redis.Redis, env: dict[str, str], tmp_path: Path
) -> None:
    cli("init", "--user-shards", "2", "--item-shards", "2", env=env)
    f = tmp_path / "events.jsonl"
    f.write_text(
        '{"type": "topup", "user_id": 1, "amount": 100}\n'
        '{"type": "add_item", "item_id": "apple", "count": 3, "price": 40}\n'
        '{"type": "order", "order_id": "o1", "user_id": 1, "item_id": "apple", "qty": 0}\n'
    )
    res = cli("produce", "file", str(f), env=env, check=False)
    assert res.returncode == 2
    assert "line 3" in res.stderr and "qty" in res.stderr
    assert "Traceback" not in res.stderr
    keys = Keys(env["EVENTFLEET_NAMESPACE"])
    assert sum(r.xlen(keys.events(s)) for s in ["u0", "u1", "i0", "i1"]) == 0


def test_produce_file_from_stdin_then_state(
    r: redis.Redis,
    env: dict[str, str],
    redis_server: LocalRedis,
    tmp_path: Path,
    fleet_factory: list[LocalFleet],
) -> None:
    cli("init", "--user-shards", "2", "--item-shards", "2", env=env)
    lines = (
        b'{"type": "topup", "user_id": 1, "amount": 600}\n\n'
        b'{"type": "add_item", "item_id": "apple", "count": 3, "price": 250}\n'
        b'{"type": "order", "order_id": "o1", "user_id": 1, "item_id": "apple", "qty": 2}\n'
        b'{"type": "order", "order_id": "o2", "user_id": 1, "item_id": "apple", "qty": 5}\n'
        b'{"type": "order", "order_id": "o3", "user_id": 1, "item_id": "pear", "qty": 1}\n'
        b'{"type": "order", "order_id": "o4", "user_id": 1, "item_id": "apple", "qty": 1}\n'
    )
    assert "published 6 events" in cli("produce", "file", "-", env=env, input=lines).stdout
    fleet = make_fleet(redis_server.url, env["EVENTFLEET_NAMESPACE"], tmp_path, fleet_factory)
    fleet.start()
    cli("status", "--wait-idle", "--timeout", "60", env=env)
    doc = cli_json("state", "all", "--json", env=env)
    assert doc == {
        "users": {"1": {"balance": 100}},
        "items": {"apple": {"price": 250, "remain": 1}},
        "orders": {
            "o1": {
                "status": "confirmed",
                "reason": None,
                "user_id": 1,
                "item_id": "apple",
                "qty": 2,
                "amount": 500,
                "duplicates": 0,
            },
            "o2": {
                "status": "rejected",
                "reason": "out_of_stock",
                "user_id": 1,
                "item_id": "apple",
                "qty": 5,
                "amount": 1250,
                "duplicates": 0,
            },
            "o3": {
                "status": "rejected",
                "reason": "unknown_item",
                "user_id": 1,
                "item_id": "pear",
                "qty": 1,
                "amount": None,
                "duplicates": 0,
            },
            "o4": {
                "status": "rejected",
                "reason": "insufficient_funds",
                "user_id": 1,
                "item_id": "apple",
                "qty": 1,
                "amount": 250,
                "duplicates": 0,
            },
        },
    }
    # o4 was released again: the final order above is rejected, so remain is 3 - 2 = 1
    assert "balance 100" in cli("state", "user", "1", env=env).stdout
    assert "remain 1" in cli("state", "item", "apple", env=env).stdout
    assert "insufficient_funds" in cli("state", "order", "o4", env=env).stdout
    status = cli_json("status", "--json", env=env)
    assert status["totals"]["idle"] is True and status["totals"]["lag"] == 0
    assert {s["shard"] for s in status["shards"]} == {"u0", "u1", "i0", "i1"}


def test_single_event_commands(r: redis.Redis, env: dict[str, str]) -> None:
    cli("init", "--user-shards", "2", "--item-shards", "2", env=env)
    assert (
        "published topup" in cli("produce", "topup", "--user", "3", "--amount", "5", env=env).stdout
    )
    out = cli(
        "produce", "add-item", "--item", "fig", "--count", "2", "--price", "0", env=env
    ).stdout
    assert "published add_item" in out
    out = cli("produce", "order", "--user", "3", "--item", "fig", "--qty", "1", env=env).stdout
    assert "order id: o-" in out
    out = cli(
        "produce",
        "order",
        "--user",
        "3",
        "--item",
        "fig",
        "--qty",
        "1",
        "--order-id",
        "mine",
        env=env,
    ).stdout
    assert "order id" not in out
    bad = cli("produce", "topup", "--user", "3", "--amount", "-5", env=env, check=False)
    assert bad.returncode == 2 and "amount" in bad.stderr and "Traceback" not in bad.stderr
    bad = cli(
        "produce",
        "add-item",
        "--item",
        "no spaces",
        "--count",
        "1",
        "--price",
        "1",
        env=env,
        check=False,
    )
    assert bad.returncode == 2 and "item_id" in bad.stderr


@pytest.mark.redis  # five commands wait out their retry deadline against a Redis that is down
def test_user_errors_are_one_line_and_non_zero(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # the same answer after a shorter retry window (test_logs: the shipped one, as a process)
    monkeypatch.setattr(context, "CONNECT_WAIT_S", 0.3)
    down = {**env, "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}
    for args in (
        ["init"],
        ["state", "all"],
        ["status"],
        ["produce", "topup", "--user", "1", "--amount", "1"],
        ["dlq", "list"],
    ):
        res = cli(*args, env=down, check=False)
        assert res.returncode == 1, args
        assert res.stderr.startswith("error: cannot reach Redis"), res.stderr
        assert "Traceback" not in res.stderr
    res = cli("state", "all", env=env, check=False)
    assert res.returncode == 2 and "not initialised" in res.stderr
    res = cli("status", "--redis", "http://nope", env=env, check=False)
    assert res.returncode == 2 and "redis://" in res.stderr  # a malformed URL is bad input
    res = cli_process("worker", env={**env, "EVENTFLEET_LEASE_TTL_MS": "soon"}, check=False)
    assert res.returncode == 2 and "lease_ttl_ms" in res.stderr and "Traceback" not in res.stderr
    res = cli("state", "user", "0", env=env, check=False)
    assert res.returncode == 2


def test_worker_refuses_a_namespace_that_is_not_initialised_or_mismatched(
    r: redis.Redis, env: dict[str, str]
) -> None:
    no_wait = {**env, "EVENTFLEET_METRICS_PORT": "0", "EVENTFLEET_NAMESPACE_WAIT_S": "0"}
    res = cli_process("worker", env=no_wait, check=False, timeout=30)
    assert res.returncode == 2 and "eventfleet init" in res.stderr
    cli("init", "--user-shards", "2", "--item-shards", "2", env=env)
    res = cli_process(
        "worker",
        env={**env, "EVENTFLEET_METRICS_PORT": "0", "EVENTFLEET_USER_SHARDS": "4"},
        check=False,
        timeout=30,
    )
    assert res.returncode == 2 and "namespace has 2 / 2" in res.stderr
    line = json.loads(res.stderr.strip().splitlines()[-1])
    assert line["event"] == "fatal" and line["level"] == "error"


def test_dlq_redrive_republishes_fixed_letters(
    r: redis.Redis,
    env: dict[str, str],
    redis_server: LocalRedis,
    tmp_path: Path,
    fleet_factory: list[LocalFleet],
) -> None:
    from eventfleet.ledger.shards import ShardCounts, user_shard
    from eventfleet.store.keys import EVENT_FIELD

    cli("init", "--user-shards", "2", "--item-shards", "2", env=env)
    keys = Keys(env["EVENTFLEET_NAMESPACE"])
    home = user_shard(4, ShardCounts(2, 2))
    other = "u1" if home == "u0" else "u0"
    # a valid topup sent to the wrong shard: dead-lettered there, re-driven to its home
    r.xadd(
        keys.events(other),
        {EVENT_FIELD: b'{"type":"topup","user_id":4,"amount":9,"source":"p:z","seq":1}'},
    )
    r.xadd(keys.events(other), {EVENT_FIELD: b"not json"})
    fleet = make_fleet(redis_server.url, env["EVENTFLEET_NAMESPACE"], tmp_path, fleet_factory)
    fleet.start()
    cli("status", "--wait-idle", "--timeout", "60", env=env)
    dead = cli_json("dlq", "list", "--json", env=env)
    assert sorted(d["reason"] for d in dead) == ["bad_json", "wrong_shard"]
    out = cli("dlq", "redrive", env=env)
    assert "re-drove 1" in out.stdout and "still invalid" in out.stderr
    cli("status", "--wait-idle", "--timeout", "60", env=env)
    assert cli_json("state", "user", "4", "--json", env=env)["balance"] == 9
    assert [d["reason"] for d in cli_json("dlq", "list", "--json", env=env)] == ["bad_json"]
