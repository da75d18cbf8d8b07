"""The one place that reads the environment (pydantic-settings, prefix ``EVENTFLEET_``)."""

from __future__ import annotations

import os
import socket
import uuid
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_REDIS_URL = "redis://localhost:6379/0"
DEFAULT_METRICS_PORT = 9108


def default_worker_id() -> str:
    host = "".join(c if c.isalnum() or c in "-_." else "-" for c in socket.gethostname())
    return f"{host[:40]}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="EVENTFLEET_", extra="ignore", populate_by_name=True
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
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["auto", "json", "console"] = "auto"

    lease_ttl_ms: int = Field(5000, ge=200, le=5000)
    snapshot_interval_s: float = Field(30.0, gt=0)
    batch_size: int = Field(1000, ge=1, le=100_000)
    block_ms: int = Field(100, ge=1, le=10_000)
    drain_timeout_s: float = Field(10.0, gt=0)
    rejoin_grace_ms: int = Field(0, ge=0, le=600_000)
    """Static membership: on SIGTERM keep this worker's membership and leases this long (after
    final snapshots), so a process restarted with the same EVENTFLEET_WORKER_ID takes its
    shards back with no replay and nothing else moves. 0: hand the shards over at once."""
    max_deliveries: int = Field(10, ge=2)
    wait_replicas: int = Field(0, ge=0, le=16)
    """After each batch's effects, WAIT until this many replicas of every master written to
    have them (0: don't wait). See docs/SCALING.md, section 6."""
    retain_s: float | None = Field(3600.0, ge=0)
    """Retention window: stream entries younger than this stay in Redis even when a snapshot
    covers them; ``off`` never trims (docs/OPERATIONS.md, "Retention and archive")."""
    archive_required: bool = False
    """Trim only what ``eventfleet archive`` has archived, even on a shard never archived yet
    (a shard the archive has seen is held to its archived-up-to mark in any case)."""
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
