"""Options and helpers every command shares: ``--redis``, ``--namespace``, the context, JSON.

``--redis`` and ``--namespace`` are options of the ``eventfleet`` group (``eventfleet
--namespace ledger2 init``) and of each command (``eventfleet init --namespace ledger2``); the
command's own wins, then the group's, then the environment (read by
``eventfleet.store.settings``)."""

from __future__ import annotations

import json
from typing import Any

import click

from eventfleet.cli.context import Ctx, make_settings

REDIS_HELP = "Redis URL [env REDIS_URL; default redis://localhost:6379/0]"
NS_HELP = "key namespace [env EVENTFLEET_NAMESPACE; default eventfleet]"
JSON_HELP = "print one JSON object on stdout instead of text"

redis_option = click.option("--redis", "redis_url", metavar="URL", default=None, help=REDIS_HELP)
ns_option = click.option("--namespace", metavar="NS", default=None, help=NS_HELP)
json_option = click.option("--json", "as_json", is_flag=True, help=JSON_HELP)

_META = "eventfleet.group"


def common(fn: Any) -> Any:
    return redis_option(ns_option(fn))


def remember_group_options(ctx: click.Context, **values: Any) -> None:
    """Called by the group: keep its ``--redis``/``--namespace``/log level for the commands."""
    ctx.meta[_META] = values


def group_option(name: str) -> Any:
    """The group's value of ``name`` (``redis_url``, ``namespace``, ``log_level``), or None."""
    ctx = click.get_current_context(silent=True)
    if ctx is None:
        return None
    return ctx.meta.get(_META, {}).get(name)


def ctx_of(redis_url: str | None, namespace: str | None, **extra: Any) -> Ctx:
    return Ctx(
        make_settings(
            redis_url=redis_url or group_option("redis_url"),
            namespace=namespace or group_option("namespace"),
            **extra,
        )
    )


def emit_json(doc: Any) -> None:
    click.echo(json.dumps(doc, indent=None, separators=(",", ":")))
