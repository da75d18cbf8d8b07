"""Static checks of docker-compose.yml: the Compose JSON schema, the contract's services,
scaling, start order, ACL users, a durable and locked-down Redis.

No Docker engine or cluster runs where the tests run, so each file is checked against the
schema or tool that its consumer uses, and against the names fixed by docs/CONTRACTS.md."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import re
import shlex
from types import ModuleType

import jsonschema
import pytest

from tests.deploy_files import (
    ROOT,
    SHARED_COMPOSE_SCHEMA,
    VENDORED_COMPOSE_SCHEMA,
    compose,
    contract_settings,
    redis_bytes,
)

SERVICES = {
    "redis",
    "init",
    "identities",
    "worker",
    "exporter",
    "api",
    "producer",
    "archive",
    "prometheus",
    "grafana",
}


def test_compose_validates_against_the_compose_spec() -> None:
    schema = json.loads(VENDORED_COMPOSE_SCHEMA.read_text(encoding="utf-8"))
    jsonschema.Draft7Validator.check_schema(schema)
    jsonschema.Draft7Validator(schema).validate(compose())


def test_vendored_compose_schema_matches_the_shared_copy() -> None:
    if not SHARED_COMPOSE_SCHEMA.exists():
        pytest.skip(f"no shared copy at {SHARED_COMPOSE_SCHEMA} to compare the vendored one with")
    assert VENDORED_COMPOSE_SCHEMA.read_bytes() == SHARED_COMPOSE_SCHEMA.read_bytes()


def test_compose_services_are_exactly_the_contract_set() -> None:
    assert set(compose()["services"]) == SERVICES


def test_worker_service_is_scalable() -> None:
    worker = compose()["services"]["worker"]
    assert "container_name" not in worker, "a fixed container name forbids --scale worker=N"
    for port in worker.get("ports", []):
        published = port.get("published") if isinstance(port, dict) else None
        if isinstance(port, str | int):
            published = str(port).rpartition(":")[0] or None
        assert published is None, f"worker publishes a fixed host port: {port!r}"


def test_workers_and_producer_wait_for_init() -> None:
    services = compose()["services"]
    assert services["init"]["command"] == ["init"]
    for name in ("worker", "producer"):
        assert services[name]["depends_on"]["init"] == {
            "condition": "service_completed_successfully"
        }, name
    assert services["init"]["depends_on"]["redis"]["condition"] == "service_healthy"
    assert services["producer"]["command"] == [
        "produce",
        "load",
        "--events",
        "100000",
        "--rate",
        "4000",
        "--seed",
        "1",
        "--source",
        "compose-load-seed1",
    ]


def test_every_role_logs_in_as_its_own_acl_user() -> None:
    services = compose()["services"]
    expected = {
        "init": "admin",
        "worker": "worker",
        "producer": "producer-app",
        "exporter": "exporter",
        "api": "api",
    }
    for service, role in expected.items():
        env = services[service]["environment"]
        assert env["EVENTFLEET_REDIS_USERNAME"] == f"eventfleet-{role}", service
        secret = f"redis_{role.replace('-', '_')}_password"
        assert services[service]["secrets"] == [secret], service
        assert env["REDIS_PASSWORD_FILE"] == f"/run/secrets/{secret}", service
        assert set(env) <= contract_settings(), f"{service} sets a variable not in CONTRACTS"


def test_the_producer_publishes_as_an_identity_that_survives_a_redis_restart() -> None:
    """The `identities` one-shot (after init, before the producer) runs `producers add app`
    as the admin with the password of the producer's secret, and users.acl, which Redis loads
    read-only, declares that very user with exactly the rules `producers add` sets: a Redis
    restart alone (no `up`, so no `identities` run) keeps it."""
    from eventfleet.store.producers import acl_rules

    services = compose()["services"]
    one_shot = services["identities"]
    secret = "/run/secrets/redis_producer_app_password"
    assert one_shot["command"] == ["producers", "add", "app", "--password-file", secret]
    assert one_shot["environment"]["EVENTFLEET_REDIS_USERNAME"] == "eventfleet-admin"
    assert one_shot["secrets"] == ["redis_admin_password", "redis_producer_app_password"]
    assert one_shot["depends_on"]["init"]["condition"] == "service_completed_successfully"
    assert one_shot["restart"] == "no"
    producer = services["producer"]
    assert producer["depends_on"]["identities"] == {"condition": "service_completed_successfully"}
    assert producer["environment"]["REDIS_PASSWORD_FILE"] == secret
    password_file = compose()["secrets"]["redis_producer_app_password"]["file"]
    password = (ROOT / password_file).read_text(encoding="utf-8").strip()
    digest = hashlib.sha256(password.encode()).hexdigest()
    rules = acl_rules("eventfleet", "app", password)
    expected = " ".join(["user", "eventfleet-producer-app"] + [
        f"#{digest}" if r.startswith(">") else r for r in rules[1:]
    ])  # fmt: skip
    lines = (ROOT / "deploy/redis/users.acl").read_text(encoding="utf-8").splitlines()
    assert expected in lines, "users.acl must declare the identity as `producers add` sets it"


def test_redis_service_is_durable_and_locked_down() -> None:
    data = compose()
    redis = data["services"]["redis"]
    command = redis["command"]
    options = dict(zip(command[1::2], command[2::2], strict=True))
    assert command[0] == "redis-server"
    assert options["--appendonly"] == "yes"
    assert options["--appendfsync"] == "always"
    assert options["--maxmemory-policy"] == "noeviction"
    assert redis_bytes(options["--maxmemory"]) <= 0.65 * redis_bytes(redis["mem_limit"]), (
        "maxmemory must leave headroom below the container limit for the AOF rewrite fork"
    )
    mounts = {m.split(":")[1]: m.split(":")[0] for m in redis["volumes"]}
    assert mounts[options["--aclfile"]] == "./deploy/redis/users.acl"
    assert mounts[options["--dir"]] in data["volumes"], "Redis data must be a named volume"
    assert "test" in redis["healthcheck"]


def test_archive_is_an_opt_in_profile_that_archives_as_admin() -> None:
    services = compose()["services"]
    archive = services["archive"]
    assert archive["profiles"] == ["archive"]
    assert "eventfleet archive /archive" in " ".join(archive["command"])
    assert archive["environment"]["EVENTFLEET_REDIS_USERNAME"] == "eventfleet-admin"
    assert archive["volumes"] == ["archive-data:/archive"]
    assert all("profiles" not in s for n, s in services.items() if n != "archive")


def test_compose_host_files_exist() -> None:
    data = compose()
    for name, service in data["services"].items():
        for mount in service.get("volumes", []):
            source = mount.split(":")[0]
            if source.startswith("."):
                assert (ROOT / source).exists(), f"{name} mounts missing {source}"
    for name, secret in data["secrets"].items():
        assert (ROOT / secret["file"]).is_file(), f"secret {name}: no file {secret['file']}"
    build = data["services"]["init"]["build"]
    assert (ROOT / build["context"] / build["dockerfile"]).is_file()


def test_ui_ports_bind_to_localhost_only() -> None:
    services = compose()["services"]
    for name in ("prometheus", "grafana"):
        for port in services[name]["ports"]:
            assert str(port).startswith("127.0.0.1:"), f"{name} exposes {port} beyond localhost"
    for name in ("redis", "init", "worker", "producer"):
        assert "ports" not in services[name], f"{name} should not publish a host port"


EVENTFLEET = {"init", "identities", "worker", "exporter", "api", "producer", "archive"}
"""The services that run the eventfleet image."""


def test_the_image_is_built_once_and_never_pulled() -> None:
    """`up --build` builds the image once: only `init` carries `build:`. Every other service
    runs the same `image:`, waits for `init` (so `up` has built it before creating them) and
    never pulls it (`pull_policy: never`: without it Compose asks a registry for it first)."""
    services = compose()["services"]
    assert {n for n, s in services.items() if "build" in s} == {"init"}
    assert {n for n, s in services.items() if s.get("image", "").startswith("eventfleet:")} == (
        EVENTFLEET
    )
    assert len({services[n]["image"] for n in EVENTFLEET}) == 1
    for name in EVENTFLEET:
        assert services[name]["pull_policy"] == "never", name
        if name != "init":
            assert services[name]["depends_on"]["init"]["condition"] == (
                "service_completed_successfully"
            ), name


def test_a_rerun_of_the_producer_is_a_no_op() -> None:
    """`docker compose up -d` starts the exited one-shot producer again: it publishes under a
    fixed source name, so the re-run's events carry the same numbers and every shard drops them
    (tests/test_idempotent_files.py runs it; `make compose-check` does it in Docker)."""
    command = compose()["services"]["producer"]["command"]
    assert command[:2] == ["produce", "load"]
    options = dict(zip(command[2::2], command[3::2], strict=True))
    assert re.fullmatch(r"[A-Za-z0-9_.:-]{1,62}", options["--source"]), options
    assert options["--seed"], "a seeded workload: the same events each run"


def compose_check() -> ModuleType:
    spec = importlib.util.spec_from_file_location("compose_check", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


SCRIPT = ROOT / "scripts" / "compose-check.py"


def test_the_documented_scaling_command_scales_only_the_workers() -> None:
    """docs/DEPLOYMENT.md's command for resizing a running fleet names the worker service and
    starts none of its dependencies: a bare `up -d --scale worker=N` also starts the exited
    `init` and `producer` again. `make compose-check` runs this very command (it reads it from
    the doc); every other `docker compose up -d ... --scale` in the docs is the same."""
    args = compose_check().documented_scaling_command()
    assert args[:2] == ["up", "-d"]
    assert "--no-deps" in args and "--no-recreate" in args
    assert re.fullmatch(r"worker=\d+", args[args.index("--scale") + 1])
    assert [a for a in args if not a.startswith("-") and "=" not in a][1:] == ["worker"]
    for doc in [ROOT / "README.md", *(ROOT / "docs").glob("*.md")]:
        text = doc.read_text(encoding="utf-8")
        lines = re.findall(r"^\s*(docker compose up -d [^#\n]*)", text, re.M)
        spans = re.findall(r"`(docker compose up -d [^`]*)`", text)  # inline, maybe wrapped
        for command in lines + spans:
            words = shlex.split(command)
            if any(w.startswith("worker=") for w in words):
                assert "--no-deps" in words and words[-1] == "worker", f"{doc.name}: {command}"


def test_compose_check_is_a_make_target_that_ci_runs() -> None:
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert re.search(r"^compose-check:\n\t@?scripts/compose-check\.py$", makefile, re.M)
    assert re.search(r"^python-check:\n\t@?scripts/python-check\.sh$", makefile, re.M)
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "make compose-check" in ci and "make python-check" in ci
    assert "shared/containers" not in SCRIPT.read_text(encoding="utf-8") + makefile, (
        "a machine's own compose files come from EVENTFLEET_COMPOSE_FILES, not the project"
    )
    # CI finds the workplace's engine script beside the checkout when its environment names
    # none, and hands its compose file on through the same variable
    found = [ln for ln in ci.splitlines() if "shared/containers" in ln]
    assert found and all(ln.strip().startswith("for shared in ") for ln in found), found
    assert 'EVENTFLEET_COMPOSE_FILES="${EVENTFLEET_COMPOSE_FILES:-$shared/' in ci
