"""The guard against a Redis that would drop transactions when it reloads its append-only file
(eventfleet/store/reload_safety.py), and the shipped Redis flags that local runs share with the compose
file and the StatefulSet."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml

from eventfleet.local.redisserver import LocalRedis
from eventfleet.local.shipped import SHIPPED_FLAGS, Logins
from eventfleet.store.reload_safety import META_FIELD, has_fix, parse_version
from tests.helpers import wait_for

ROOT = Path(__file__).resolve().parents[1]
NS = "eventfleet"
OLD_DEFAULT = "user default off resetkeys resetchannels -@all"
"""The default-user line shipped before: off, and allowed nothing (the AOF replay too)."""


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("EVENTFLEET_", "REDIS_"))}
    return subprocess.run(
        [sys.executable, "-m", "eventfleet", *args],
        env={**base, **env}, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def env_of(server: LocalRedis, role: str, **extra: str) -> dict[str, str]:
    assert server.logins is not None
    return {
        "REDIS_URL": server.url,
        "EVENTFLEET_NAMESPACE": NS,
        "EVENTFLEET_LOG_FORMAT": "json",
        "EVENTFLEET_METRICS_PORT": "0",
        "EVENTFLEET_NAMESPACE_WAIT_S": "0",
        **server.logins.env(role),
        **extra,
    }


def root(server: LocalRedis) -> redis.Redis:
    logins: Logins | None = server.logins
    assert logins is not None
    return redis.Redis(
        port=server.port, username=logins.user("root"), password=logins.password("root")
    )


@pytest.fixture
def unsafe(tmp_path: Path) -> Any:
    """The shipped set-up with the old default-user line."""
    server = LocalRedis(workdir=tmp_path / "redis", shipped=True)
    acl = server.dir / "users.acl"
    lines = acl.read_text().splitlines()
    assert lines[0].startswith("user default ")
    acl.write_text("\n".join([OLD_DEFAULT, *lines[1:]]) + "\n")
    server.start()
    yield server
    server.close()


@pytest.fixture
def shipped(tmp_path: Path) -> Any:
    server = LocalRedis(workdir=tmp_path / "redis", shipped=True).start()
    yield server
    server.close()


def test_init_refuses_a_redis_that_drops_transactions_on_reload(unsafe: LocalRedis) -> None:
    done = run(env_of(unsafe, "admin"), "init", "--user-shards", "2", "--item-shards", "2")
    lines = [ln for ln in (done.stdout + done.stderr).splitlines() if ln.strip()]
    assert done.returncode == 2, done.stderr
    assert len(lines) == 1, lines
    assert "redis 7." in lines[0] and "14541" in lines[0] and "ACL default user" in lines[0]
    assert "EVENTFLEET_ALLOW_UNSAFE_RELOAD" in lines[0]
    assert root(unsafe).keys("*") == [], "init wrote something before refusing"


def test_a_worker_refuses_without_a_passed_check_and_the_override_lets_both_run(
    unsafe: LocalRedis, tmp_path: Path
) -> None:
    override = {"EVENTFLEET_ALLOW_UNSAFE_RELOAD": "1"}
    done = run(env_of(unsafe, "admin", **override), "init", "--user-shards", "2")
    assert done.returncode == 0, done.stderr
    assert "EVENTFLEET_ALLOW_UNSAFE_RELOAD is set" in done.stderr
    assert root(unsafe).hget(f"{NS}:meta", META_FIELD) is None

    refused = run(env_of(unsafe, "worker"), "worker")
    assert refused.returncode == 2
    output = refused.stdout + refused.stderr
    fatal = [ln for ln in output.splitlines() if '"fatal"' in ln]
    assert len(fatal) == 1 and "no passed reload check on record" in fatal[0], output
    assert "Traceback" not in refused.stdout + refused.stderr

    log = tmp_path / "worker.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "eventfleet", "worker"],
            env={**os.environ, **env_of(unsafe, "worker", **override)},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for(lambda: '"connected"' in log.read_text() or proc.poll() is not None, 30, "start")
        assert proc.poll() is None, log.read_text()
        assert "reload_check_skipped" in log.read_text()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)


def test_init_records_the_check_and_a_worker_trusts_it(shipped: LocalRedis, tmp_path: Path) -> None:
    done = run(env_of(shipped, "admin"), "init", "--user-shards", "2", "--item-shards", "2")
    assert done.returncode == 0, done.stderr
    record: Any = root(shipped).hget(f"{NS}:meta", META_FIELD)
    assert record is not None and record.decode().startswith("redis 7.")
    log = tmp_path / "worker.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "eventfleet", "worker"],
            env={**os.environ, **env_of(shipped, "worker")},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for(lambda: '"connected"' in log.read_text() or proc.poll() is not None, 30, "start")
        assert proc.poll() is None, log.read_text()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0


def test_a_redis_with_the_upstream_fix_needs_no_acl_check() -> None:
    assert parse_version("7.0.15") == (7, 0)
    assert parse_version("8.8-m02") == (8, 8)
    assert not has_fix("redis", "7.4.2") and not has_fix("redis", "8.6.1")
    assert has_fix("redis", "8.8.0") and has_fix("redis", "9.0.0")
    assert not has_fix("valkey", "9.0.0")  # not checked here: the ACL check decides


def redis_flags(command: list[str]) -> list[str]:
    """The flags of a redis-server command line, without --aclfile and --dir (paths)."""
    flags = command[1:]
    out: list[str] = []
    for name, value in zip(flags[::2], flags[1::2], strict=True):
        if name not in ("--aclfile", "--dir"):
            out += [name, str(value)]
    return out


def test_local_runs_use_the_compose_and_statefulset_redis_flags() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert redis_flags(compose["services"]["redis"]["command"]) == list(SHIPPED_FLAGS)
    sts = yaml.safe_load((ROOT / "k8s" / "redis-statefulset.yaml").read_text())
    container = sts["spec"]["template"]["spec"]["containers"][0]
    assert redis_flags(container["command"]) == list(SHIPPED_FLAGS)
    assert compose["services"]["redis"]["image"] == container["image"] == "redis:7.0.15"


def test_the_shipped_default_user_is_off_and_may_replay_writes_only(shipped: LocalRedis) -> None:
    assert (ROOT / "deploy" / "redis" / "users.acl").read_text().splitlines()[0] == (
        "user default off resetpass resetkeys resetchannels ~eventfleet:* -@all +@write +select"
    )
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(port=shipped.port).ping()
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(port=shipped.port, username="default", password="").ping()
    r = root(shipped)

    def dryrun(*command: str) -> Any:
        return r.execute_command("ACL", "DRYRUN", "default", *command)  # type: ignore[no-untyped-call]

    assert dryrun("GET", f"{NS}:meta") != b"OK"
    assert dryrun("SET", "other:key", "1") != b"OK"
    assert dryrun("SET", f"{NS}:x", "1") == b"OK"


def test_the_local_acl_copy_follows_the_namespace(tmp_path: Path) -> None:
    from eventfleet.local.shipped import write_acl

    acl, logins = write_acl(tmp_path, namespace="chaos-1")
    text = acl.read_text()
    assert "eventfleet:" not in text  # every key pattern, the {workers} tags inside too
    assert "~chaos-1:live{chaos-1:workers}" in text and "user eventfleet-worker " in text
    assert logins.password_file("worker").read_text().strip() not in text
