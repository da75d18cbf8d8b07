"""The group's options and conventions: global --redis/--namespace (a command's own win),
-v and EVENTFLEET_LOG_LEVEL, warnings for unknown EVENTFLEET_* variables, exit codes
(2 bad input, 1 Redis unreachable, 3 differences found), --json outputs, shell completion."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

import pytest
import redis

from eventfleet.cli import context
from eventfleet.ledger.state import ShardState
from eventfleet.local.redisserver import free_port
from eventfleet.store.keys import Keys
from tests.helpers import cli, cli_process


def one_json(stdout: str) -> dict[str, object]:
    lines = stdout.strip().splitlines()
    assert len(lines) == 1, stdout
    doc = json.loads(lines[0])
    assert isinstance(doc, dict)
    return doc


def test_global_redis_and_namespace_reach_every_command(
    r: redis.Redis, env: dict[str, str], namespace: str
) -> None:
    other = f"{namespace}-b"
    down = f"redis://127.0.0.1:{free_port()}/0"
    url = env["REDIS_URL"]
    # the group's options beat the environment (which points at nothing here)
    base = {**env, "REDIS_URL": down}
    made = cli("--redis", url, "--namespace", other, "init", "--user-shards", "2",
               "--item-shards", "2", "--json", env=base)  # fmt: skip
    assert one_json(made.stdout) == {
        "namespace": other,
        "created": True,
        "user_shards": 2,
        "item_shards": 2,
        "dedup_window_s": 604800.0,
    }
    assert r.exists(Keys(other).meta) and not r.exists(Keys(namespace).meta)
    # a command's own option beats the group's
    again = cli("--redis", down, "--namespace", namespace, "init", "--redis", url,
                "--namespace", other, "--json", "--user-shards", "2", "--item-shards", "2",
                env=base)  # fmt: skip
    assert one_json(again.stdout)["created"] is False
    status = cli("--redis", url, "--namespace", other, "status", "--json", env=base)
    assert len(one_json(status.stdout)["shards"]) == 4  # type: ignore[arg-type]


def test_exit_codes_tell_differences_from_outages_and_bad_input(
    r: redis.Redis, env: dict[str, str], namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(context, "CONNECT_WAIT_S", 0.3)  # an outage, told sooner
    cli("init", "--user-shards", "2", "--item-shards", "2", env=env)
    assert cli("verify", env=env).returncode == 0
    top = one_json(cli("produce", "topup", "--user", "5", "--amount", "10", "--json",
                       env=env).stdout)  # fmt: skip
    shard = str(top["shard"])  # the top-up waits in the shard's inbox (no worker runs)
    forged = ShardState(shard)
    forged.balances[5] = 999_999  # a snapshot that no fold of the log gives
    r.set(Keys(namespace).snapshot(shard), forged.to_snapshot())
    found = cli("verify", "--json", env=env, check=False)
    assert found.returncode == 3 and not one_json(found.stdout)["ok"]
    down = cli("verify", env={**env, "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"},
               check=False)  # fmt: skip
    assert down.returncode == 1 and down.stderr.startswith("error: cannot reach Redis")
    for bad in ("http://nope", "redis://host:port/0", "localhost:6379", "redis://h/db"):
        res = cli("status", env={**env, "REDIS_URL": bad}, check=False)
        assert res.returncode == 2, (bad, res.stderr)
        assert len(res.stderr.strip().splitlines()) == 1 and "REDIS_URL" in res.stderr, res.stderr


def test_reshard_compare_exit_codes_and_json(
    r: redis.Redis, env: dict[str, str], namespace: str, tmp_path: Path
) -> None:
    cli("init", "--user-shards", "2", "--item-shards", "2", env=env)
    cut = tmp_path / "cut.json"
    cut.write_text(json.dumps({"users": {"7": {"balance": 100}}, "items": {}, "orders": {}}))
    res = cli("reshard", "compare", "--cut", str(cut), "--json", env=env, check=False)
    assert res.returncode == 3, res.stderr
    doc = one_json(res.stdout)
    assert doc["differences"] == 1 and doc["users"] == 1
    cli("produce", "topup", "--user", "7", "--amount", "100", env=env)
    # nobody applies it (no worker): compare folds the log itself, as state does
    same = cli("reshard", "compare", "--cut", str(cut), "--json", env=env, check=False)
    assert same.returncode == 0, same.stdout
    cut.write_text("not json")
    broken = cli("reshard", "compare", "--cut", str(cut), env=env, check=False)
    assert broken.returncode == 2 and "reshard export" in broken.stderr


def test_json_outputs_of_produce_dlq_and_wait_idle(
    r: redis.Redis, env: dict[str, str], tmp_path: Path
) -> None:
    cli("init", "--user-shards", "2", "--item-shards", "2", env=env)
    top = one_json(cli("produce", "topup", "--user", "3", "--amount", "500", "--json",
                       env=env).stdout)  # fmt: skip
    assert top["type"] == "topup" and top["shard"] in ("u0", "u1")
    assert str(top["source"]).startswith("p:") and top["seq"] == 1
    item = one_json(cli("produce", "add-item", "--item", "pear", "--count", "2", "--price", "9",
                        "--json", env=env).stdout)  # fmt: skip
    assert item["type"] == "add_item"
    order = one_json(cli("produce", "order", "--user", "3", "--item", "pear", "--qty", "1",
                         "--json", env=env).stdout)  # fmt: skip
    assert str(order["order_id"]).startswith("o-")
    events = tmp_path / "e.jsonl"
    events.write_text('{"type": "topup", "user_id": 4, "amount": 1}\n')
    assert one_json(cli("produce", "file", str(events), "--json", env=env).stdout) == {
        "published": 1
    }
    loaded = cli("produce", "load", "--events", "10", "--json", env=env).stdout
    assert one_json(loaded) == {"published": 10}
    redriven = one_json(cli("dlq", "redrive", "--json", env=env).stdout)
    assert redriven == {"redriven": 0, "still_invalid": [], "dry_run": False, "letters": []}
    waited = cli("status", "--wait-idle", "--timeout", "0.2", "--json", env=env, check=False)
    assert waited.returncode == 1  # no worker runs: never idle
    assert one_json(waited.stdout) == {"idle": False, "timeout_s": 0.2}


@pytest.mark.redis  # processes, four of them waiting out a retry deadline
def test_log_level_verbose_and_unknown_variables(env: dict[str, str]) -> None:
    """Processes of their own: the log set-up is per process. Each waits out the retry window
    of an unreachable Redis, so they run side by side."""
    down = {**env, "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}
    runs = {
        "quiet": (("status",), down),
        "loud": (("status",), {**down, "EVENTFLEET_LOG_LEVEL": "warning"}),
        "verbose": (("-v", "status"), down),
        "typo": (("status",), {**down, "EVENTFLEET_LEASE_TTL": "1000"}),
    }
    with ThreadPoolExecutor(len(runs)) as pool:
        done = {
            k: pool.submit(partial(cli_process, *args, env=e, check=False))
            for k, (args, e) in runs.items()
        }
    quiet, loud, verbose = (done[k].result() for k in ("quiet", "loud", "verbose"))
    assert "redis_retry" not in quiet.stderr  # errors only, by default
    assert "redis_retry" in loud.stderr
    assert "redis_retry" in verbose.stderr
    typo = cli_process("--help", env={**env, "EVENTFLEET_LEASE_TTL": "1000"})
    assert "unknown" not in typo.stderr  # --help runs no command
    typo = done["typo"].result()
    assert (
        "warning: unknown setting EVENTFLEET_LEASE_TTL (did you mean EVENTFLEET_LEASE_TTL_MS?)"
        in typo.stderr
    )


def test_shell_completion_script_is_generated() -> None:
    res = cli(env={"_EVENTFLEET_COMPLETE": "bash_source"})
    assert "complete" in res.stdout and "_EVENTFLEET_COMPLETE" in res.stdout
