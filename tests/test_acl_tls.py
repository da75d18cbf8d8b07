"""The shipped Redis ACL file and TLS set-up, against real redis-server processes.

Each server is started here, on a free port in a temp dir, with a temp copy of
deploy/redis/users.acl, so the users, key patterns and command lists are exactly the shipped
ones. The copy gets one extra user, `fixture-root`, used only to set up and clear data.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
from redis import exceptions as rx
from redis.backoff import NoBackoff
from redis.retry import Retry

ROOT = Path(__file__).resolve().parents[1]
ACL_FILE = ROOT / "deploy" / "redis" / "users.acl"
SECRETS = ROOT / "deploy" / "redis" / "demo-secrets"
CONTRACTS = ROOT / "docs" / "CONTRACTS.md"

ROOT_USER, ROOT_PASSWORD = "fixture-root", "fixture-root-password"

META = "eventfleet:meta"
EVENTS = "eventfleet:{u0}:events"
ITEM_EVENTS = "eventfleet:{i7}:events"
SNAPSHOT = "eventfleet:{u0}:snapshot"
LEASE = "eventfleet:{u0}:lease"
EPOCH = "eventfleet:{u0}:epoch"
OUTCOMES = "eventfleet:{u0}:outcomes"
DLQ = "eventfleet:{u0}:dlq"
POISON = "eventfleet:{u0}:poison"
WORKERS = "eventfleet:workers"
GROUP = "workers"
SCRIPT = "return redis.call('XLEN', KEYS[1])"
SCRIPT_SHA = hashlib.sha1(SCRIPT.encode()).hexdigest()

DEADLINE_S = 15.0
NO_RETRY = Retry(NoBackoff(), 0)


def password(role: str) -> str:
    return (SECRETS / f"eventfleet-{role}.password").read_text(encoding="utf-8").strip()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


# ---------------------------------------------------------------- redis-server processes


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=DEADLINE_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def listening(proc: subprocess.Popen[bytes], port: int, deadline: float) -> bool:
    """True once `port` accepts connections; False if the server exits or the deadline passes."""
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            pass
        try:
            proc.wait(timeout=0.05)  # paces the loop and notices an early exit
            return False
        except subprocess.TimeoutExpired:
            continue
    return False


def start_redis(workdir: Path, args: Callable[[int], list[str]]) -> Server:
    """redis-server on a free loopback port; `args(port)` gives the port-dependent options."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not installed: apt-get install -y redis-server (7.0+)")
    for _ in range(5):
        port = free_port()
        log = workdir / f"redis-{port}.log"
        command = [binary, "--bind", "127.0.0.1", "--dir", str(workdir), "--save", "",
                   "--appendonly", "no", "--logfile", str(log), *args(port)]  # fmt: skip
        proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if listening(proc, port, time.monotonic() + DEADLINE_S):
            return Server(proc, port, log)
        Server(proc, port, log).stop()
        text = log.read_text(errors="replace") if log.exists() else ""
        if "Address already in use" not in text:
            pytest.fail(f"redis-server did not start ({' '.join(command)}):\n{text[-3000:]}")
    pytest.fail("no free port for redis-server after 5 tries")


def acl_copy(workdir: Path) -> Path:
    """The shipped ACL file plus the fixture's own superuser."""
    copy = workdir / "users.acl"
    text = ACL_FILE.read_text(encoding="utf-8").rstrip("\n")
    copy.write_text(f"{text}\nuser {ROOT_USER} on >{ROOT_PASSWORD} ~* &* +@all\n")
    return copy


def connect(port: int, role: str, secret: str | None = None, **extra: Any) -> redis.Redis:
    """A plain client logged in as `role` (admin, worker, producer or the fixture's root)."""
    if secret is None:
        secret = ROOT_PASSWORD if role == "root" else password(role)
    options: dict[str, Any] = {
        "socket_timeout": DEADLINE_S,
        "decode_responses": True,
        "retry": NO_RETRY,  # a refused login fails at once instead of after back-off
        **extra,
    }
    user = ROOT_USER if role == "root" else f"eventfleet-{role}"
    return redis.Redis(host="127.0.0.1", port=port, username=user, password=secret, **options)


@pytest.fixture(scope="module")
def acl_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    workdir = tmp_path_factory.mktemp("redis-acl")
    aclfile = acl_copy(workdir)
    server = start_redis(workdir, lambda port: ["--port", str(port), "--aclfile", str(aclfile)])
    yield server
    server.stop()


@pytest.fixture
def port(acl_server: Server) -> Iterator[int]:
    root = connect(acl_server.port, "root")
    root.flushall()
    root.script_flush()
    yield acl_server.port
    root.close()


@pytest.fixture
def seeded(port: int) -> dict[str, str]:
    """Namespace data as `init` and a producer would leave it; returns placeholders' values."""
    root = connect(port, "root")
    root.hset(META, mapping={"user_shards": 1, "item_shards": 8, "version": 1})
    root.xgroup_create(EVENTS, GROUP, id="0", mkstream=True)
    entry = root.xadd(EVENTS, {"event": "{}"})
    root.xadd(EVENTS, {"event": "{}"})
    root.xreadgroup(GROUP, "w-old", {EVENTS: ">"}, count=1)  # one pending entry
    root.set(SNAPSHOT, "{}")
    root.script_load(SCRIPT)
    root.close()
    return {"$ID": str(entry), "$SHA": SCRIPT_SHA}


def send(client: redis.Redis, *command: str) -> Any:
    return client.execute_command(*command)  # type: ignore[no-untyped-call]


def refused(client: redis.Redis, *command: str) -> bool:
    try:
        send(client, *command)
    except rx.NoPermissionError:
        return True
    return False


# ---------------------------------------------------------------- who may log in


def test_default_user_is_off(port: int) -> None:
    anonymous = redis.Redis(host="127.0.0.1", port=port, retry=NO_RETRY)
    with pytest.raises(rx.AuthenticationError):
        anonymous.ping()
    with pytest.raises(rx.AuthenticationError):
        redis.Redis(host="127.0.0.1", port=port, password="anything", retry=NO_RETRY).ping()


@pytest.mark.parametrize("role", ["admin", "worker", "producer"])
def test_each_user_logs_in_with_its_demo_password_only(port: int, role: str) -> None:
    assert connect(port, role).ping() is True
    with pytest.raises(rx.AuthenticationError):
        connect(port, role, secret=password(role) + "x").ping()


def test_demo_passwords_match_the_acl_hashes() -> None:
    text = ACL_FILE.read_text(encoding="utf-8")
    for role in ("admin", "worker", "producer"):
        digest = hashlib.sha256(password(role).encode()).hexdigest()
        assert re.search(rf"^user eventfleet-{role} on #{digest} ", text, re.M), role
    assert ">" not in text, "no clear-text password belongs in the shipped ACL file"


# ---------------------------------------------------------------- admin (init and operator)


def test_admin_can_initialise_the_namespace(port: int) -> None:
    admin = connect(port, "admin")
    assert admin.hsetnx(META, "user_shards", 4) == 1
    admin.hset(META, mapping={"item_shards": 4, "version": 1})
    for stream in (EVENTS, ITEM_EVENTS):
        assert admin.xgroup_create(stream, GROUP, id="0", mkstream=True)
        assert admin.xinfo_groups(stream)[0]["name"] == GROUP
    assert admin.hgetall(META) == {"user_shards": "4", "item_shards": "4", "version": "1"}
    admin.xadd(DLQ, {"event": "{}"})
    assert admin.xlen(DLQ) == 1


@pytest.mark.parametrize(
    "command",
    [("FLUSHALL",), ("FLUSHDB",), ("KEYS", "*"), ("CONFIG", "GET", "maxmemory"),
     ("ACL", "LIST"), ("SET", "other:key", "1"), ("GET", "other:key")],
    ids=lambda c: " ".join(c[:2]),
)  # fmt: skip
def test_admin_is_refused_dangerous_commands_and_foreign_keys(
    port: int, command: tuple[str, ...]
) -> None:
    assert refused(connect(port, "admin"), *command)


# ---------------------------------------------------------------- producer


def test_producer_can_publish_and_read_the_shard_counts(port: int, seeded: dict[str, str]) -> None:
    producer = connect(port, "producer")
    for stream in (EVENTS, ITEM_EVENTS, "eventfleet:{u123}:events"):
        assert producer.xadd(stream, {"event": '{"type":"topup"}'})
    assert producer.hgetall(META)["item_shards"] == "8"
    producer.client_setname("producer-test")
    assert send(producer, "WAIT", "0", "0") == 0


@pytest.mark.parametrize(
    "command",
    [
        ("GET", SNAPSHOT),
        ("DEL", SNAPSHOT),
        ("SET", SNAPSHOT, "{}"),
        ("XRANGE", EVENTS, "-", "+"),
        ("XREAD", "STREAMS", EVENTS, "0"),
        ("XREADGROUP", "GROUP", GROUP, "p", "STREAMS", EVENTS, ">"),
        ("XLEN", EVENTS),
        ("XADD", OUTCOMES, "*", "event", "{}"),
        ("XADD", DLQ, "*", "event", "{}"),
        ("XADD", "eventfleet:{u0}:snapshot}:events", "*", "event", "{}"),
        ("XADD", "eventfleet:{x1}:events", "*", "event", "{}"),
        ("XADD", "other:{u0}:events", "*", "event", "{}"),
        ("HSET", META, "user_shards", "1"),
        ("EVAL", "return 1", "0"),
    ],
    ids=lambda c: f"{c[0]} {c[1]}",
)
def test_producer_is_refused_everything_else(
    port: int, seeded: dict[str, str], command: tuple[str, ...]
) -> None:
    assert refused(connect(port, "producer"), *command)


# ---------------------------------------------------------------- worker

# One call per command the worker sends: docs/CONTRACTS.md's list (WORKER_EXTRA_CALLS holds
# any the code sends before the contract lists them).
WORKER_CALLS: dict[str, tuple[str, ...]] = {
    "PING": ("PING",),
    "HELLO": ("HELLO", "2"),
    "CLIENT SETNAME": ("CLIENT", "SETNAME", "acl-test"),
    "TIME": ("TIME",),
    "HGETALL": ("HGETALL", META),
    "GET": ("GET", SNAPSHOT),
    "SET": ("SET", LEASE, "w:1", "PX", "5000", "NX"),
    "DEL": ("DEL", LEASE),
    "INCR": ("INCR", EPOCH),
    "EVAL": ("EVAL", SCRIPT, "1", EVENTS),
    "EVALSHA": ("EVALSHA", "$SHA", "1", EVENTS),
    "SCRIPT LOAD": ("SCRIPT", "LOAD", SCRIPT),
    "XREADGROUP": ("XREADGROUP", "GROUP", GROUP, "w1", "COUNT", "10", "STREAMS", EVENTS, ">"),
    "XREAD": ("XREAD", "COUNT", "10", "STREAMS", EVENTS, "0"),
    "XADD": ("XADD", OUTCOMES, "*", "event", "{}"),
    "XACK": ("XACK", EVENTS, GROUP, "$ID"),
    "XAUTOCLAIM": ("XAUTOCLAIM", EVENTS, GROUP, "w2", "0", "0-0", "COUNT", "10"),
    "XRANGE": ("XRANGE", EVENTS, "-", "+"),
    "XREVRANGE": ("XREVRANGE", EVENTS, "+", "-", "COUNT", "1"),
    "XLEN": ("XLEN", EVENTS),
    "XINFO GROUPS": ("XINFO", "GROUPS", EVENTS),
    "XINFO CONSUMERS": ("XINFO", "CONSUMERS", EVENTS, GROUP),
    "XINFO STREAM": ("XINFO", "STREAM", EVENTS),
    "XPENDING": ("XPENDING", EVENTS, GROUP),
    "XGROUP DELCONSUMER": ("XGROUP", "DELCONSUMER", EVENTS, GROUP, "w-old"),
    "ZADD": ("ZADD", WORKERS, "1", "w1"),
    "ZREM": ("ZREM", WORKERS, "w1"),
    "ZRANGEBYSCORE": ("ZRANGEBYSCORE", WORKERS, "-inf", "+inf"),
    "ZREMRANGEBYSCORE": ("ZREMRANGEBYSCORE", WORKERS, "-inf", "0"),
    "EXISTS": ("EXISTS", LEASE),
    "PEXPIRE": ("PEXPIRE", LEASE, "5000"),
    "ZRANGE": ("ZRANGE", WORKERS, "0", "-1"),
    "SADD": ("SADD", POISON, "1-0"),
    "SMEMBERS": ("SMEMBERS", POISON),
    "SCRIPT EXISTS": ("SCRIPT", "EXISTS", "$SHA"),
}
WORKER_EXTRA_CALLS: dict[str, tuple[str, ...]] = {}


def contract_command_list(who: str) -> list[str]:
    """Commands of one role from CONTRACTS.md's 'Commands the worker sends' paragraph."""
    text = " ".join(CONTRACTS.read_text(encoding="utf-8").split())
    patterns = {
        "worker": r"Commands the worker sends \(for ACLs\): (.*?)\. The producer:",
        "producer": r"The producer: (.*?)\. `init` additionally:",
        "init": r"`init` additionally: (.*?)\.",
    }
    match = re.search(patterns[who], text)
    assert match, f"CONTRACTS.md no longer lists the {who}'s commands the way this test reads"
    return [re.sub(r"\s*\(.*?\)", "", name).strip() for name in match.group(1).split(",")]


def test_every_contract_worker_command_is_exercised() -> None:
    listed = contract_command_list("worker")
    assert len(listed) > 20
    assert set(listed) == set(WORKER_CALLS), "keep WORKER_CALLS in step with CONTRACTS.md"


def resolve(call: tuple[str, ...], values: dict[str, str]) -> list[str]:
    return [values.get(part, part) for part in call]


@pytest.mark.parametrize("name", [*WORKER_CALLS, *WORKER_EXTRA_CALLS])
def test_worker_may_send_its_commands_on_namespace_keys(
    port: int, seeded: dict[str, str], name: str
) -> None:
    call = {**WORKER_CALLS, **WORKER_EXTRA_CALLS}[name]
    send(connect(port, "worker"), *resolve(call, seeded))


def test_worker_may_read_its_group_inside_a_script(port: int, seeded: dict[str, str]) -> None:
    script = (
        "return redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', 10,"
        " 'STREAMS', KEYS[1], '>')"
    )
    worker = connect(port, "worker")
    read = worker.eval(script, 1, EVENTS, GROUP, "w-script")
    assert read[0][0] == EVENTS


def test_worker_may_run_registered_scripts_in_a_pipeline(port: int, seeded: dict[str, str]) -> None:
    worker = connect(port, "worker")
    count = worker.register_script(SCRIPT)
    pipe = worker.pipeline(transaction=False)
    count(keys=[EVENTS], client=pipe)
    pipe.xadd(OUTCOMES, {"event": "{}"})
    assert pipe.execute()[0] == 2


@pytest.mark.parametrize(
    "name",
    [n for n, c in {**WORKER_CALLS, **WORKER_EXTRA_CALLS}.items() if any(":" in p for p in c)],
)
def test_worker_is_refused_keys_outside_the_namespace(
    port: int, seeded: dict[str, str], name: str
) -> None:
    call = {**WORKER_CALLS, **WORKER_EXTRA_CALLS}[name]
    foreign = [part.replace("eventfleet:", "other:") for part in resolve(call, seeded)]
    assert refused(connect(port, "worker"), *foreign), f"{name} reached a foreign key"


@pytest.mark.parametrize(
    "command",
    [("FLUSHALL",), ("KEYS", "*"), ("CONFIG", "GET", "maxmemory"), ("HSET", META, "x", "1"),
     ("HSETNX", META, "x", "1"), ("XGROUP", "CREATE", DLQ, GROUP, "0", "MKSTREAM"),
     ("XDEL", EVENTS, "0-1"), ("XTRIM", EVENTS, "MAXLEN", "0"), ("SCRIPT", "FLUSH"),
     ("SUBSCRIBE", "eventfleet:x"), ("ACL", "WHOAMI")],
    ids=lambda c: " ".join(c[:2]),
)  # fmt: skip
def test_worker_is_refused_commands_it_does_not_need(
    port: int, seeded: dict[str, str], command: tuple[str, ...]
) -> None:
    assert refused(connect(port, "worker"), *command)


# ---------------------------------------------------------------- TLS


def openssl(workdir: Path, *args: str) -> None:
    binary = shutil.which("openssl")
    if binary is None:
        pytest.fail("the openssl command is not installed: apt-get install -y openssl")
    result = subprocess.run(
        [binary, *args], cwd=workdir, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, f"openssl {' '.join(args)}:\n{result.stderr}"


def make_ca(workdir: Path, name: str) -> None:
    openssl(workdir, "req", "-x509", "-new", "-nodes", "-newkey", "ec",
            "-pkeyopt", "ec_paramgen_curve:prime256v1", "-keyout", f"{name}.key",
            "-out", f"{name}.crt", "-days", "2", "-subj", f"/CN=test {name}")  # fmt: skip


def make_cert(workdir: Path, name: str, ca: str, extensions: str) -> None:
    (workdir / f"{name}.ext").write_text(extensions + "\n")
    openssl(workdir, "req", "-new", "-nodes", "-newkey", "ec",
            "-pkeyopt", "ec_paramgen_curve:prime256v1", "-keyout", f"{name}.key",
            "-out", f"{name}.csr", "-subj", f"/CN={name}")  # fmt: skip
    openssl(workdir, "x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt",
            "-CAkey", f"{ca}.key", "-CAcreateserial", "-out", f"{name}.crt", "-days", "2",
            "-extfile", f"{name}.ext")  # fmt: skip


@pytest.fixture(scope="module")
def tls_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A throwaway CA with a server and a client certificate, plus an unrelated CA."""
    workdir = tmp_path_factory.mktemp("tls")
    make_ca(workdir, "ca")
    make_ca(workdir, "other-ca")
    make_cert(workdir, "server", "ca",
              "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth")  # fmt: skip
    make_cert(workdir, "client", "ca", "extendedKeyUsage=clientAuth")
    make_cert(workdir, "stranger", "other-ca", "extendedKeyUsage=clientAuth")
    return workdir


@pytest.fixture(scope="module")
def tls_server(tls_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    workdir = tmp_path_factory.mktemp("redis-tls")
    aclfile = acl_copy(workdir)
    server = start_redis(
        workdir,
        lambda port: ["--port", "0", "--tls-port", str(port),
                      "--tls-cert-file", str(tls_dir / "server.crt"),
                      "--tls-key-file", str(tls_dir / "server.key"),
                      "--tls-ca-cert-file", str(tls_dir / "ca.crt"),
                      "--tls-auth-clients", "yes", "--aclfile", str(aclfile)],
    )  # fmt: skip
    yield server
    server.stop()


def tls_url(server: Server, role: str) -> str:
    return f"rediss://eventfleet-{role}:{password(role)}@127.0.0.1:{server.port}/0"


def test_tls_round_trip_with_client_certificate(tls_server: Server, tls_dir: Path) -> None:
    worker = redis.Redis.from_url(
        tls_url(tls_server, "worker"),
        ssl_ca_certs=str(tls_dir / "ca.crt"),
        ssl_certfile=str(tls_dir / "client.crt"),
        ssl_keyfile=str(tls_dir / "client.key"),
        socket_timeout=DEADLINE_S,
        decode_responses=True,
    )
    entry = worker.xadd(OUTCOMES, {"event": '{"order_id":"o1"}'})
    assert worker.xrange(OUTCOMES, min=entry, max=entry) == [
        (entry, {"event": '{"order_id":"o1"}'})
    ]


@pytest.mark.parametrize(
    ("ca", "cert"),
    [("ca", None), ("other-ca", "client"), ("ca", "stranger")],
    ids=["no-client-cert", "unknown-server-ca", "client-cert-from-other-ca"],
)
def test_tls_refuses_missing_or_foreign_certificates(
    tls_server: Server, tls_dir: Path, ca: str, cert: str | None
) -> None:
    extra = {"ssl_certfile": str(tls_dir / f"{cert}.crt"),
             "ssl_keyfile": str(tls_dir / f"{cert}.key")} if cert else {}  # fmt: skip
    client = redis.Redis.from_url(
        tls_url(tls_server, "worker"),
        ssl_ca_certs=str(tls_dir / f"{ca}.crt"),
        socket_timeout=DEADLINE_S,
        retry=NO_RETRY,
        **extra,
    )
    with pytest.raises(rx.ConnectionError):
        client.ping()


def test_plain_connection_to_the_tls_port_fails(tls_server: Server) -> None:
    plain = connect(tls_server.port, "worker", socket_timeout=2.0, socket_connect_timeout=2.0)
    with pytest.raises(rx.ConnectionError):
        plain.ping()


# ---------------------------------------------------------------- the eventfleet command


def eventfleet_binary() -> Path:
    binary = Path(sys.executable).parent / "eventfleet"
    if not binary.exists():
        pytest.fail(f"{binary} is missing: pip install -e .[dev] installs the eventfleet command")
    return binary


def cli_env(
    url: str, role: str, *, secret_file: Path | None = None, extra: dict[str, str] | None = None
) -> dict[str, str]:
    """The environment of one eventfleet process logged in as `role`, nothing inherited."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("EVENTFLEET_", "REDIS_"))}  # fmt: skip
    env.update(
        REDIS_URL=url,
        EVENTFLEET_NAMESPACE="eventfleet",
        EVENTFLEET_REDIS_USERNAME=f"eventfleet-{role}",
        REDIS_PASSWORD_FILE=str(secret_file or SECRETS / f"eventfleet-{role}.password"),
        EVENTFLEET_LOG_FORMAT="json",
        EVENTFLEET_METRICS_PORT="0",
    )
    env.update(extra or {})
    return env


def run_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(eventfleet_binary()), *args],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result.stdout


def wait_for(what: str, condition: Callable[[], bool], deadline_s: float) -> None:
    deadline = time.monotonic() + deadline_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {deadline_s:.0f}s waiting for {what}")


def fleet_round_trip(url: str, tmp_path: Path, tls: dict[str, str] | None = None) -> None:
    """init as admin, a topup as producer, a worker as the worker user, state as admin."""
    admin, producer = cli_env(url, "admin", extra=tls), cli_env(url, "producer", extra=tls)
    ok(run_cli(admin, "init", "--user-shards", "2", "--item-shards", "2"))
    ok(run_cli(producer, "produce", "topup", "--user", "1", "--amount", "500"))
    metrics_port = free_port()
    worker_env = cli_env(
        url, "worker", extra={**(tls or {}), "EVENTFLEET_METRICS_PORT": str(metrics_port)}
    )
    log_path = tmp_path / "worker.log"
    with log_path.open("w") as log:
        worker = subprocess.Popen(
            [str(eventfleet_binary()), "worker"], env=worker_env, stdout=log, stderr=log
        )
    try:

        def balance() -> Any:
            result = run_cli(admin, "state", "user", "1", "--json")
            return json.loads(ok(result))["balance"] if worker.poll() is None else "exited"

        wait_for("the topup to be applied", lambda: balance() in (500, "exited"), 60)
        assert worker.poll() is None, f"the worker exited:\n{log_path.read_text()}"
        probe = cli_env(url, "worker", extra={"EVENTFLEET_METRICS_PORT": str(metrics_port)})
        wait_for("eventfleet health", lambda: run_cli(probe, "health").returncode == 0, 30)
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            code = worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
            raise
    log_text = log_path.read_text()
    assert code == 0, f"the worker exited {code} after SIGTERM:\n{log_text}"
    assert "NOPERM" not in log_text and "permission" not in log_text.lower(), log_text
    assert run_cli(probe, "health").returncode != 0, "health still 0 after the worker stopped"


def test_fleet_runs_under_the_acl_users(acl_server: Server, port: int, tmp_path: Path) -> None:
    fleet_round_trip(f"redis://127.0.0.1:{port}/0", tmp_path)


def test_fleet_runs_over_tls(tls_server: Server, tls_dir: Path, tmp_path: Path) -> None:
    root = redis.Redis(
        host="127.0.0.1", port=tls_server.port, username=ROOT_USER, password=ROOT_PASSWORD,
        ssl=True, ssl_ca_certs=str(tls_dir / "ca.crt"),
        ssl_certfile=str(tls_dir / "client.crt"), ssl_keyfile=str(tls_dir / "client.key"),
    )  # fmt: skip
    root.flushall()
    fleet_round_trip(
        f"rediss://127.0.0.1:{tls_server.port}/0",
        tmp_path,
        {
            "EVENTFLEET_TLS_CA_FILE": str(tls_dir / "ca.crt"),
            "EVENTFLEET_TLS_CERT_FILE": str(tls_dir / "client.crt"),
            "EVENTFLEET_TLS_KEY_FILE": str(tls_dir / "client.key"),
        },
    )


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
