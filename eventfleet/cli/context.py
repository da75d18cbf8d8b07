"""What every command shares: settings from env and options, the client, the counts, and
turning user-caused errors into one clear line and a non-zero exit."""

from __future__ import annotations

import importlib
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import click
import redis
from pydantic import ValidationError
from redis import exceptions as rx

from eventfleet.ledger.shards import ShardCounts
from eventfleet.store import retry
from eventfleet.store.connection import TRANSIENT, FatalRedisError, classify, connect, mask_url
from eventfleet.store.errors import NotRedis
from eventfleet.store.keys import Keys
from eventfleet.store.namespace import (
    NamespaceError,
    NamespaceMismatch,
    NamespaceMissing,
    read_counts,
)
from eventfleet.store.settings import Settings
from eventfleet.store.shardreads import SnapshotUnusable

CONNECT_WAIT_S = 3.0
"""How long a command retries its first reply from Redis before it says Redis is unreachable."""

EXIT_FAILED = 1
"""Failed: Redis unreachable, a refused command, a timeout."""
EXIT_USAGE = 2
"""Bad input: options, settings (a malformed REDIS_URL too), files, a namespace that is not
there or has other counts, a shard or reason that does not exist."""
EXIT_DIFFERENCES = 3
"""The check ran and found differences (verify, chaos, reshard compare, up): a cron job tells
corruption from an outage by this code."""


class UserError(click.ClickException):
    """One line on stderr, exit ``code``."""

    def __init__(self, message: str, code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        setattr(self, "exit_code", code)  # noqa: B010  (click declares it a class variable)

    def show(self, file: Any = None) -> None:
        click.echo(f"error: {self.message}", err=True)


@dataclass
class Ctx:
    settings: Settings
    _r: redis.Redis | None = None

    @property
    def keys(self) -> Keys:
        return Keys(self.settings.namespace)

    @property
    def redis(self) -> redis.Redis:
        if self._r is None:
            self._r = connect(self.settings, timeout=10.0, wait_s=CONNECT_WAIT_S)
            retry.call(self._r.ping, "connect", deadline=time.monotonic() + CONNECT_WAIT_S)
        return self._r

    def counts(self) -> ShardCounts:
        return read_counts(self.redis, self.keys)


def make_settings(**overrides: Any) -> Settings:
    given = {k: v for k, v in overrides.items() if v is not None}
    try:
        return Settings(**given)
    except ValidationError as err:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'setting'}: "
            + e["msg"].removeprefix("Value error, ")
            for e in err.errors(include_url=False)
        )
        raise UserError(f"invalid setting: {problems}", EXIT_USAGE) from None


OOM_ADVICE = (
    "nothing was lost; try again once memory is freed (`eventfleet archive` lets retention "
    "trim, or raise maxmemory)"
)


@contextmanager
def user_errors(settings: Settings | None = None) -> Iterator[None]:
    """Map what a user can cause to one line; anything else is a bug and keeps its trace."""
    url = mask_url(settings.redis_url) if settings else "Redis"
    try:
        yield
    except NotRedis as exc:  # a setting that names something else: bad input
        raise UserError(str(exc), EXIT_USAGE) from None
    except (NamespaceMissing, NamespaceMismatch) as exc:  # a mistyped namespace or counts
        raise UserError(str(exc), EXIT_USAGE) from None
    except SnapshotUnusable as exc:  # damaged data in Redis: which shard and why, as verify's 3
        raise UserError(str(exc), EXIT_DIFFERENCES) from None
    except (FatalRedisError, NamespaceError) as exc:
        raise UserError(str(exc)) from None
    except rx.OutOfMemoryError:
        raise UserError(f"Redis at {url} is full (over maxmemory): {OOM_ADVICE}") from None
    except rx.ResponseError as exc:  # a permission, credential or missing-key reply
        fatal = classify(exc)
        if fatal is None:
            raise
        raise UserError(str(fatal)) from None
    except TRANSIENT as exc:
        raise UserError(f"cannot reach Redis at {url} ({type(exc).__name__})") from None
    except BrokenPipeError:  # output piped into `head`
        sys.stderr.close()
        raise SystemExit(EXIT_FAILED) from None


def dev_tool(module: str, command: str) -> ModuleType:
    """Import one of the development tools (``eventfleet.local``, ``.bench``, ``.chaos``), which
    the production image leaves out, with one clear line when they are missing."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if not (exc.name or "").startswith("eventfleet."):
            raise
        raise UserError(
            f"`eventfleet {command}` is a development tool that this installation leaves out "
            "(the container image ships only what production runs); run it from a checkout "
            "with `pip install -e .`",
            EXIT_USAGE,
        ) from None
