"""``exporter``: namespace-wide gauges from Redis alone, for Prometheus and KEDA."""

from __future__ import annotations

import sys

import click

from eventfleet.cli.options import common, ctx_of


@click.command()
@common
@click.option(
    "--port",
    type=click.IntRange(1, 65535),
    default=None,
    help="port of /metrics and /healthz [env EVENTFLEET_EXPORTER_PORT; default 9109]",
)
@click.option(
    "--interval",
    type=click.FloatRange(0.1, 3600),
    default=None,
    help="read Redis at most once per this many seconds "
    "[env EVENTFLEET_EXPORTER_INTERVAL_S; default 5]",
)
def exporter(
    redis_url: str | None, namespace: str | None, port: int | None, interval: float | None
) -> None:
    """Serve every shard's lag, lag in seconds, pending, owner and dead letters, read from
    Redis alone (owned or not), until SIGTERM."""
    from eventfleet.exporter.main import run_exporter

    c = ctx_of(redis_url, namespace, exporter_port=port, exporter_interval_s=interval)
    sys.exit(run_exporter(c.settings))
