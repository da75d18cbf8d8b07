"""What one API process holds: its settings and limits, the authenticator (identities and
their clients), the idempotency store on its own Redis login, the metrics."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from redis import asyncio as aredis

from eventfleet.api.auth import Authenticator
from eventfleet.api.idempotency import DEFAULT_TTL_S, Store
from eventfleet.api.metrics import ApiMetrics
from eventfleet.store.connection import client_kwargs
from eventfleet.store.keys import Keys
from eventfleet.store.settings import Settings

MAX_BODY = 16 * 1024
"""The largest request body the API reads (413 past it): an event is a few hundred bytes."""


@dataclass(frozen=True)
class ApiConfig:
    max_body: int = MAX_BODY
    idempotency_ttl_s: int = DEFAULT_TTL_S
    token_cache_s: float = 30.0
    max_identities: int = 64
    clients_per_identity: int = 4
    max_wait_s: float = 30.0
    """Every ``wait`` is cut to this (a proxy's idle timeout, say)."""
    access_log: bool = True


@dataclass
class ApiState:
    settings: Settings
    config: ApiConfig
    auth: Authenticator = field(init=False)
    redis: Any = field(init=False)
    idempotency: Store = field(init=False)
    metrics: ApiMetrics = field(init=False)

    def __post_init__(self) -> None:
        self.metrics = ApiMetrics(self.settings.namespace)
        self.auth = Authenticator(
            self.settings,
            cache_ttl=self.config.token_cache_s,
            max_identities=self.config.max_identities,
            clients_per_identity=self.config.clients_per_identity,
        )
        kwargs = client_kwargs(self.settings, 5.0, "eventfleet-api")
        self.redis = aredis.Redis.from_url(self.settings.redis_url, **kwargs)
        self.idempotency = Store(self.redis, self.settings.namespace, self.config.idempotency_ttl_s)

    def capped(self, wait: float | None) -> float | None:
        return None if wait is None else min(wait, self.config.max_wait_s)

    async def ready(self) -> tuple[bool, str]:
        """Redis answers the API's own login and the namespace exists."""
        try:
            found = await self.redis.exists(Keys(self.settings.namespace).meta)
        except Exception as exc:  # any failure is "not ready", said in one line
            return False, f"redis: {type(exc).__name__}"
        return (True, "ready") if found else (False, "namespace not initialised")

    async def aclose(self) -> None:
        await self.auth.aclose()
        await self.redis.aclose()


__all__ = ["MAX_BODY", "ApiConfig", "ApiState"]
