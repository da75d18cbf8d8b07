"""The one place that reads the environment (pydantic-settings, prefix ``EVENTFLEET_``)."""

from __future__ import annotations

import difflib
import os
import socket
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import AliasChoices, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_REDIS_URL = "redis://localhost:6379/0"
DEFAULT_METRICS_PORT = 9108
DEFAULT_EXPORTER_PORT = 9109


def default_worker_id() -> str:
    host = "".join(c if c.isalnum() or c in "-_." else "-" for c in socket.gethostname())
    return f"{host[:40]}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="EVENTFLEET_",
        extra="ignore",
        populate_by_name=True,
        # model_defer_ms is a setting, not pydantic's: the floor pydantic in locks/minimum.txt
        # reserves every name starting model_ (newer ones only model_validate, model_dump)
        protected_namespaces=("settings_",),
    )

    redis_url: str = Field(
        DEFAULT_REDIS_URL, validation_alias=AliasChoices("REDIS_URL", "EVENTFLEET_REDIS_URL")
    )
    redis_password_file: Path | None = Field(
        None, validation_alias=AliasChoices("REDIS_PASSWORD_FILE", "EVENTFLEET_REDIS_PASSWORD_FILE")
    )
    redis_username: str | None = None
    tls_ca_file: Path | None = None
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    connect_timeout_s: float = Field(30.0, gt=0)
    namespace_wait_s: float = Field(600.0, ge=0)
    """How long a starting worker waits for ``eventfleet init`` to create its namespace
    (logging every few seconds) before it exits 2. 0: exit at once."""

    namespace: str = Field("eventfleet", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    worker_id: str = Field(default_factory=default_worker_id, pattern=r"^[A-Za-z0-9_.-]{1,100}$")
    metrics_port: int = Field(DEFAULT_METRICS_PORT, ge=0, le=65535)
    metrics_host: str = "0.0.0.0"
    exporter_port: int = Field(DEFAULT_EXPORTER_PORT, ge=1, le=65535)
    """Port of ``eventfleet exporter``'s ``/metrics`` (it listens on ``metrics_host``)."""
    exporter_interval_s: float = Field(5.0, ge=0.1, le=3600)
    """The exporter reads Redis at most once per this many seconds, whatever the scrapers."""
    api_port: int = Field(8080, ge=1, le=65535)
    """Port of ``eventfleet api`` (the HTTP API, with its ``/metrics``; on ``metrics_host``)."""
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["auto", "json", "console"] = "auto"

    lease_ttl_ms: int = Field(5000, ge=200, le=5000)
    snapshot_interval_s: float = Field(30.0, gt=0)
    batch_size: int = Field(1000, ge=1, le=100_000)
    block_ms: int = Field(100, ge=1, le=10_000)
    model_defer_ms: int = Field(1000, ge=0, le=60_000)
    """While a shard works through a backlog, its read-model write may wait this long for a
    later batch's, so a key touched again is written once (worker/modeldefer.py). 0: every
    batch writes its model."""
    drain_timeout_s: float = Field(10.0, gt=0)
    rejoin_grace_ms: int = Field(0, ge=0, le=600_000)
    """Static membership: on SIGTERM keep this worker's membership and leases this long (after
    final snapshots), so a process restarted with the same EVENTFLEET_WORKER_ID takes its
    shards back with no replay and nothing else moves. 0: hand the shards over at once."""
    rejoin_check: Literal["none", "kubernetes"] = "none"
    """How a static member tells a restart (it comes back: keep its shards for the grace) from
    a removal (it does not: hand them over at once). ``none``: every SIGTERM is a restart.
    ``kubernetes``: the worker runs as a StatefulSet pod named ``<statefulset>-<ordinal>`` and
    on SIGTERM reads the StatefulSet's replica count; an ordinal at or past it is a scale-down
    (worker/rejoin.py)."""
    kube_api_url: str = "https://kubernetes.default.svc"
    """The Kubernetes API server (``rejoin_check=kubernetes``)."""
    kube_sa_dir: Path = Path("/var/run/secrets/kubernetes.io/serviceaccount")
    """The pod's service-account files: ``token``, ``ca.crt``, ``namespace``."""
    max_deliveries: int = Field(10, ge=2)
    wait_replicas: int = Field(0, ge=0, le=16)
    """After each batch's effects, WAIT until this many replicas of every master written to
    have them (0: don't wait). See docs/SCALING.md, section 6."""
    allow_unsafe_reload: bool = False
    """Skip the check, at ``init`` and worker start, that Redis keeps every transaction when it
    reloads its append-only file (eventfleet/store/reload_safety.py, docs/SECURITY.md)."""
    retain_s: float | None = Field(3600.0, ge=0)
    """Retention window: stream entries younger than this stay in Redis even when a snapshot
    covers them; ``off`` never trims (docs/OPERATIONS.md, "Retention and archive")."""
    archive_required: bool = False
    """Trim only what ``eventfleet archive`` has archived, even on a shard never archived yet
    (a shard the archive has seen is held to its archived-up-to mark in any case)."""
    liveness_check_ms: int = Field(100, ge=0, le=10_000)
    """How often a worker asks Redis whether its peers' connections are still open (a crashed
    worker's shards are taken over at once); 0 turns the fast path off (leases only)."""
    standbys: int = Field(1, ge=0, le=3)
    """Warm standbys per shard: the next workers in rendezvous order keep a copy of its state,
    so a takeover replays only what its owner had not acked (worker/standby.py)."""
    dedup_window_s: float = Field(7 * 24 * 3600.0, ge=0.001, le=10 * 365 * 24 * 3600.0)
    """How long (entry-id time) a shard remembers producer watermarks, idempotency keys and
    order ids. Read by ``init`` only, which fixes it in the namespace (docs/EVENTS.md)."""
    producer_backlog: int = Field(5000, ge=10, le=1_000_000)
    """Events one producer identity may have waiting in its own inbox of one shard; past it
    the client refuses the write (BacklogFull) and the move drops what was pushed around the
    client. Read by ``init`` only, which fixes it in the namespace (docs/SCALING.md)."""
    producer_backlog_bytes: int = Field(2 * 1024 * 1024, ge=64 * 1024, le=1024 * 1024 * 1024)
    """Bytes (Redis' MEMORY USAGE of the list) one producer's own inbox of one shard may hold;
    the move cuts what lies past it. Read by ``init`` only."""
    user_shards: int | None = Field(None, ge=1, le=4096)
    item_shards: int | None = Field(None, ge=1, le=4096)

    @field_validator("retain_s", mode="before")
    @classmethod
    def _off(cls, v: object) -> object:
        return None if isinstance(v, str) and v.strip().lower() in ("off", "none", "") else v

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower(cls, v: object) -> object:
        return v.lower() if isinstance(v, str) else v

    @model_validator(mode="before")
    @classmethod
    def _given_wins(cls, data: Any) -> Any:
        """A value given by field name (a command-line option) beats one from the environment
        under an alias (``REDIS_URL``): older pydantic-settings (2.2) handed both to pydantic,
        which took the alias."""
        if not isinstance(data, dict):
            return data
        for name, field in cls.model_fields.items():
            alias = field.validation_alias
            if name in data and isinstance(alias, AliasChoices):
                data = {k: v for k, v in data.items() if k not in alias.choices}
        return data

    @field_validator("redis_url")
    @classmethod
    def _url(cls, v: str) -> str:
        problem = url_problem(v)
        if problem:
            raise ValueError(problem)
        return v


PREFIX = "EVENTFLEET_"
LOG_LEVELS = ("debug", "info", "warning", "error")


def url_problem(url: str) -> str | None:
    """Why ``url`` is no Redis URL (without echoing a password), or None when it is one."""
    try:
        parts = urlsplit(url)
        port = parts.port  # raises on a port that is no number in range
    except ValueError as exc:
        return f"REDIS_URL is not a valid URL ({exc})"
    if parts.scheme not in ("redis", "rediss", "unix"):
        shown = f"{parts.scheme}://" if parts.scheme else "no scheme"
        return f"REDIS_URL must start with redis://, rediss:// or unix://, got {shown}"
    if parts.scheme == "unix":
        return None if parts.path else "REDIS_URL unix:// needs a socket path"
    if not parts.hostname:
        return "REDIS_URL names no host (redis://HOST:PORT/DB)"
    db = parts.path.strip("/")
    if db and not db.isdigit():
        return f"REDIS_URL's database must be a number, got {db[:20]!r}"
    del port
    return None


def known_env_names() -> set[str]:
    """Every ``EVENTFLEET_*`` variable the settings read."""
    names = {PREFIX + name.upper() for name in Settings.model_fields}
    for field in Settings.model_fields.values():
        alias = field.validation_alias
        if isinstance(alias, AliasChoices):
            names.update(str(c) for c in alias.choices if str(c).startswith(PREFIX))
    return names


def unknown_env_names(environ: Mapping[str, str] | None = None) -> list[str]:
    """``EVENTFLEET_*`` variables that no setting reads (mistyped ones), each with a
    suggestion when one is close: ``"EVENTFLEET_LEASE_TTL (did you mean ...?)"``."""
    env = os.environ if environ is None else environ
    known = known_env_names()
    out = []
    for name in sorted(n for n in env if n.startswith(PREFIX) and n not in known):
        close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.8)
        out.append(f"{name} (did you mean {close[0]}?)" if close else name)
    return out


def env_log_level(environ: Mapping[str, str] | None = None) -> str | None:
    """``EVENTFLEET_LOG_LEVEL`` for the commands' own logging, read leniently (a wrong value
    is reported by the command that builds the full settings); None when unset."""
    env = os.environ if environ is None else environ
    value = env.get(PREFIX + "LOG_LEVEL", "").strip().lower()
    return value if value in LOG_LEVELS else None


def env_log_format(environ: Mapping[str, str] | None = None) -> str:
    env = os.environ if environ is None else environ
    value = env.get(PREFIX + "LOG_FORMAT", "").strip().lower()
    return value if value in ("auto", "json", "console") else "auto"
