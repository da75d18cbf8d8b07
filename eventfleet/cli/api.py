"""``api``: the HTTP API (needs the ``api`` extra: ``pip install 'eventfleet[api]'``)."""

from __future__ import annotations

import sys

import click
import structlog

from eventfleet.cli.context import EXIT_USAGE, UserError
from eventfleet.cli.options import common, ctx_of, group_option
from eventfleet.store.logs import configure


@click.command()
@common
@click.option(
    "--port",
    type=click.IntRange(1, 65535),
    default=None,
    help="port of the API, /metrics, /healthz and /readyz [env EVENTFLEET_API_PORT; default 8080]",
)
@click.option(
    "--host",
    default=None,
    help="address to listen on [env EVENTFLEET_METRICS_HOST; default 0.0.0.0]",
)
@click.option(
    "--max-wait",
    type=click.FloatRange(0, 30),
    default=30.0,
    show_default=True,
    help="cut every long-poll `wait` to this many seconds",
)
@click.option(
    "--idempotency-ttl",
    type=click.IntRange(60, 30 * 86400),
    default=86400,
    show_default=True,
    help="seconds an Idempotency-Key's first answer is kept",
)
@click.option(
    "--clients-per-identity",
    type=click.IntRange(1, 64),
    default=4,
    show_default=True,
    help="Redis clients per identity (their sends go side by side)",
)
@click.option(
    "--access-log/--no-access-log", default=True, show_default=True, help="a log line per request"
)
@click.option(
    "--print-openapi",
    is_flag=True,
    help="print the OpenAPI document (docs/openapi.json) and exit",
)
def api(
    redis_url: str | None,
    namespace: str | None,
    port: int | None,
    host: str | None,
    max_wait: float,
    idempotency_ttl: int,
    clients_per_identity: int,
    access_log: bool,
    print_openapi: bool,
) -> None:
    """Serve the HTTP API until SIGTERM: POST /v1/topups, /v1/items, /v1/orders and the reads
    (docs/API.md). Bearer tokens are producer identities' Redis credentials; the API's own
    login (REDIS_URL, EVENTFLEET_REDIS_USERNAME, REDIS_PASSWORD_FILE) keeps Idempotency-Keys."""
    try:
        from eventfleet.api import serve
        from eventfleet.api.state import ApiConfig
    except ImportError as exc:
        raise UserError(
            f"eventfleet api needs the api extra (pip install 'eventfleet[api]'): {exc}",
            EXIT_USAGE,
        ) from None
    if print_openapi:
        click.echo(serve.openapi_text(), nl=False)
        return
    c = ctx_of(redis_url, namespace, **({"api_port": port} if port else {}))
    # A server logs at info by default (EVENTFLEET_LOG_LEVEL; -v/-vv win), as the worker does.
    configure(group_option("log_level") or c.settings.log_level, c.settings.log_format)
    # the same lines, each line and its newline in one write (print() makes two): one a request
    structlog.configure(logger_factory=structlog.WriteLoggerFactory(file=sys.stderr))
    config = ApiConfig(
        idempotency_ttl_s=idempotency_ttl,
        clients_per_identity=clients_per_identity,
        max_wait_s=max_wait,
        access_log=access_log,
    )
    sys.exit(serve.run(c.settings, config, host or c.settings.metrics_host, c.settings.api_port))
