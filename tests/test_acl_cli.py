"""The eventfleet command under the shipped ACL users: the fleet runs as them, and a wrong
password or a missing permission is one clear line, never a traceback or the password."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from eventfleet.ledger.shards import ShardCounts
from eventfleet.local.fleet import LocalFleet
from eventfleet.store.keys import Keys
from eventfleet.store.shardreads import parse_lease
from tests.fleet_utils import log_lines
from tests.helpers import wait_for
from tests.secure_redis import Server, cli_env, connect, fleet_round_trip, ok, run_cli


def test_fleet_runs_under_the_acl_users(acl_server: Server, port: int, tmp_path: Path) -> None:
    fleet_round_trip(f"redis://127.0.0.1:{port}/0", tmp_path)


def test_a_killed_worker_is_seen_dead_under_the_worker_acl_user(
    acl_server: Server, port: int, tmp_path: Path, fleet_factory: list[LocalFleet]
) -> None:
    """The liveness check (CLIENT ID, CLIENT LIST ID, its scripts) works as eventfleet-worker."""
    url = f"redis://127.0.0.1:{port}/0"
    # 8+8: rendezvous hashing gives two workers every shard of 4+4 to one of them once in 128
    ok(run_cli(cli_env(url, "admin"), "init", "--user-shards", "8", "--item-shards", "8"))
    env = cli_env(url, "worker", extra={"EVENTFLEET_LEASE_TTL_MS": "5000"})
    fleet = LocalFleet(url, "eventfleet", tmp_path / "logs", env=env)
    fleet_factory.append(fleet)
    a, b = fleet.start(), fleet.start()

    root = connect(port, "root")
    keys = Keys("eventfleet")

    def owners() -> set[str]:
        return {
            lease.owner
            for s in ShardCounts(8, 8).all_shards()
            if (lease := parse_lease(root.get(keys.lease(s)))) is not None
        }

    wait_for(
        lambda: owners() == {a.worker_id, b.worker_id},
        60,
        "both workers to hold shards",
    )
    fleet.kill(a)
    wait_for(
        lambda: any(
            e["event"] == "lease_acquired" and str(e.get("broke")).startswith(a.worker_id + ":")
            for e in log_lines(b)
        ),
        60,
        "the survivor to break the dead worker's leases",
    )
    refused = [e for e in log_lines(b) if "permission" in str(e.get("error")).lower()]
    assert refused == []


WRONG = "wrong-pass-Zq9x7"


@pytest.mark.parametrize("how", ["password-file", "url"])
@pytest.mark.parametrize("command", [("init",), ("worker",), ("status",)], ids=" ".join)
def test_wrong_password_fails_with_one_clear_line(
    port: int, tmp_path: Path, how: str, command: tuple[str, ...]
) -> None:
    secret = tmp_path / "wrong.password"
    secret.write_text(WRONG)
    if how == "password-file":
        env = cli_env(f"redis://127.0.0.1:{port}/0", "admin", secret_file=secret)
    else:
        env = cli_env(f"redis://eventfleet-admin:{WRONG}@127.0.0.1:{port}/0", "admin")
        del env["REDIS_PASSWORD_FILE"]
    result = run_cli(env, *command)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert WRONG not in output, "the password leaked into the output"
    assert "Traceback" not in output, output
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line, got:\n{output}"
    assert re.search(r"credential|password|auth", lines[0], re.I), lines[0]


def test_init_as_a_user_without_permission_fails_with_one_clear_line(port: int) -> None:
    result = run_cli(cli_env(f"redis://127.0.0.1:{port}/0", "producer"), "init")
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "Traceback" not in output, output
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line, got:\n{output}"
    assert "permission" in lines[0], lines[0]


def test_worker_as_a_user_without_permission_stops_with_a_clear_error(port: int) -> None:
    ok(run_cli(cli_env(f"redis://127.0.0.1:{port}/0", "admin"), "init"))
    result = run_cli(cli_env(f"redis://127.0.0.1:{port}/0", "producer"), "worker")
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "Traceback" not in output, output
    assert "lacks a permission" in output, output
