"""Redis over TLS with client certificates, against a real redis-server: a throwaway CA made
with `openssl`, refused foreign or missing certificates, and the fleet run over TLS."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from redis import exceptions as rx

from tests.secure_redis import (
    DEADLINE_S,
    NO_RETRY,
    OUTCOMES,
    ROOT_PASSWORD,
    ROOT_USER,
    Server,
    acl_copy,
    connect,
    fleet_round_trip,
    password,
    start_redis,
)


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


@pytest.mark.fleet  # a worker process (fleet_round_trip)
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
