"""``init``, ``worker`` and ``health``: set up a namespace, run a worker, probe it."""

from __future__ import annotations

import sys
import urllib.error
import urllib.request

import click

from eventfleet.cli.context import EXIT_FAILED, EXIT_USAGE, UserError, user_errors
from eventfleet.cli.options import common, ctx_of, emit_json, group_option, json_option
from eventfleet.ledger.shards import ShardCounts

DEFAULT_SHARDS = 16


@click.command()
@common
@click.option(
    "--user-shards",
    default=None,
    type=click.IntRange(1, 4096),
    help="user (balance) shards, fixed for the namespace's life "
    "[env EVENTFLEET_USER_SHARDS; default 16]",
)
@click.option(
    "--item-shards",
    default=None,
    type=click.IntRange(1, 4096),
    help="item (stock) shards, fixed for the namespace's life "
    "[env EVENTFLEET_ITEM_SHARDS; default 16]",
)
@click.option(
    "--dedup-window",
    "window_s",
    type=click.FloatRange(0.001, 10 * 365 * 24 * 3600.0),
    default=None,
    help="seconds a shard remembers producers, idempotency keys and order ids, fixed for "
    "the namespace's life [env EVENTFLEET_DEDUP_WINDOW_S; default 604800 = 7 days]",
)
@json_option
def init(
    redis_url: str | None,
    namespace: str | None,
    user_shards: int | None,
    item_shards: int | None,
    window_s: float | None,
    as_json: bool,
) -> None:
    """Create the namespace: meta, shard streams and the consumer group (idempotent)."""
    from eventfleet.store.namespace import init_namespace
    from eventfleet.store.producers import Bounds
    from eventfleet.store.reload_safety import UnsafeReload, guard_init, record

    c = ctx_of(redis_url, namespace)
    user_shards = user_shards or c.settings.user_shards or DEFAULT_SHARDS
    item_shards = item_shards or c.settings.item_shards or DEFAULT_SHARDS
    window_ms = max(1, round(1000 * (window_s or c.settings.dedup_window_s)))
    with user_errors(c.settings):
        counts = ShardCounts(user_shards, item_shards, window_ms)
        try:
            reload = None if c.settings.allow_unsafe_reload else guard_init(c.redis, c.keys)
        except UnsafeReload as exc:
            raise UserError(str(exc), EXIT_USAGE) from None
        bounds = Bounds(c.settings.producer_backlog, c.settings.producer_backlog_bytes)
        created = init_namespace(c.redis, c.keys, counts, bounds)
        if reload is not None:
            record(c.redis, c.keys, reload)
        else:
            click.echo(
                "warning: EVENTFLEET_ALLOW_UNSAFE_RELOAD is set: not checked whether Redis keeps "
                "transactions across a restart (docs/SECURITY.md)",
                err=True,
            )
    if as_json:
        emit_json(
            {
                "namespace": c.settings.namespace,
                "created": created,
                "user_shards": user_shards,
                "item_shards": item_shards,
                "dedup_window_s": window_ms / 1000,
            }
        )
        return
    word = "created" if created else "already initialised"
    click.echo(
        f"namespace {c.settings.namespace}: {word} "
        f"({user_shards} user shards, {item_shards} item shards, "
        f"dedup window {window_ms / 1000:g} s)"
    )


@click.command()
@common
@click.option(
    "--metrics-port",
    type=click.IntRange(0, 65535),
    default=None,
    help="port for /metrics /healthz /readyz [env EVENTFLEET_METRICS_PORT; 9108; 0 off]",
)
@click.option(
    "--worker-id",
    default=None,
    help="member id, consumer name and lease holder [env EVENTFLEET_WORKER_ID]",
)
def worker(
    redis_url: str | None, namespace: str | None, metrics_port: int | None, worker_id: str | None
) -> None:
    """Run one worker process until SIGTERM (drain) or a second signal (hard stop)."""
    from eventfleet.worker.main import run_worker

    level = group_option("log_level")  # -v on the group beats EVENTFLEET_LOG_LEVEL
    c = ctx_of(
        redis_url, namespace, metrics_port=metrics_port, worker_id=worker_id, log_level=level
    )
    sys.exit(run_worker(c.settings))


@click.command()
@click.option(
    "--port",
    type=int,
    envvar="EVENTFLEET_METRICS_PORT",
    default=9108,
    show_default=True,
    help="the worker's metrics port [env EVENTFLEET_METRICS_PORT]",
)
@click.option("--ready", is_flag=True, help="check /readyz instead of /healthz")
def health(port: int, ready: bool) -> None:
    """Exit 0 when the local worker answers 200 on /healthz (or /readyz); for probes."""
    path = "/readyz" if ready else "/healthz"
    where = f"127.0.0.1:{port}"
    try:
        with urllib.request.urlopen(f"http://{where}{path}", timeout=3) as resp:
            why = None if resp.status == 200 else f"{path} answered {resp.status}"
    except urllib.error.HTTPError as exc:  # 503: stalled or not ready; 404: not a worker
        body = exc.read(200).decode(errors="replace").strip()
        why = f"{path} on {where} answered {exc.code}" + (f" ({body})" if body else "")
    except (urllib.error.URLError, OSError) as exc:
        why = f"{_reason(exc)} on {where} (is a worker running with this metrics port?)"
    click.echo("ok" if why is None else f"unhealthy: {why}")
    sys.exit(0 if why is None else EXIT_FAILED)


def _reason(exc: BaseException) -> str:
    """What went wrong reaching the port, in words: connection refused, timed out, ..."""
    inner = getattr(exc, "reason", exc)
    if isinstance(inner, ConnectionRefusedError):
        return "connection refused"
    if isinstance(inner, TimeoutError):
        return "timed out"
    if isinstance(inner, OSError) and inner.strerror:
        return inner.strerror.lower()
    return str(inner) or type(inner).__name__
