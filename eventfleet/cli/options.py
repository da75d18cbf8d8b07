"""Options and helpers every command shares: ``--redis``, ``--namespace``, the context, JSON."""

from __future__ import annotations

import json
from typing import Any

import click

from eventfleet.cli.context import Ctx, make_settings

redis_option = click.option(
    "--redis",
    "redis_url",
    envvar="REDIS_URL",
    default=None,
    help="Redis URL [env REDIS_URL; default redis://localhost:6379/0]",
)
ns_option = click.option(
    "--namespace",
    envvar="EVENTFLEET_NAMESPACE",
    default=None,
    help="key namespace [env EVENTFLEET_NAMESPACE; default eventfleet]",
)


def common(fn: Any) -> Any:
    return redis_option(ns_option(fn))


def ctx_of(redis_url: str | None, namespace: str | None, **extra: Any) -> Ctx:
    return Ctx(make_settings(redis_url=redis_url, namespace=namespace, **extra))


def emit_json(doc: Any) -> None:
    click.echo(json.dumps(doc, indent=None, separators=(",", ":")))
