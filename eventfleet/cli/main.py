"""The ``eventfleet`` command: one group, every command registered here explicitly."""

from __future__ import annotations

import click

from eventfleet.cli import (
    api,
    archive,
    basic,
    bench,
    chaos,
    dlq,
    exporter,
    localredis,
    produce,
    producers,
    reshard,
    state,
    status,
    up,
    verify,
)
from eventfleet.cli.context import EXIT_USAGE
from eventfleet.cli.options import NS_HELP, REDIS_HELP, remember_group_options

EPILOG = """\b
Exit codes: 0 ok; 1 failed (Redis unreachable, refused, timed out); 2 bad input
(options, settings, REDIS_URL, files); 3 the check found differences (verify,
chaos, reshard compare, up). `produce order --wait`: 0 confirmed, 3 rejected,
4 duplicate order id, 5 no outcome in time; `produce`: 6 the producer's backlog is
full (retry later). `state order`: 4 no outcome.
Shell completion (bash; zsh and fish alike):
  eval "$(_EVENTFLEET_COMPLETE=bash_source eventfleet)"
"""


@click.group(context_settings={"help_option_names": ["-h", "--help"]}, epilog=EPILOG)
@click.version_option(package_name="eventfleet")
@click.option(
    "--redis",
    "redis_url",
    metavar="URL",
    default=None,
    help=f"{REDIS_HELP}; for every command (a command's own --redis wins)",
)
@click.option("--namespace", metavar="NS", default=None, help=f"{NS_HELP}; for every command")
@click.option(
    "-v",
    "--verbose",
    count=True,
    help="log more on stderr: -v info, -vv debug [default: EVENTFLEET_LOG_LEVEL, else errors]",
)
@click.pass_context
def cli(ctx: click.Context, redis_url: str | None, namespace: str | None, verbose: int) -> None:
    """eventfleet: an exactly-once event-sourced ledger on sharded Redis streams."""
    from eventfleet.store.logs import configure
    from eventfleet.store.settings import env_log_format, env_log_level, unknown_env_names

    chosen = {0: None, 1: "info"}.get(verbose, "debug") or env_log_level()
    remember_group_options(ctx, redis_url=redis_url, namespace=namespace, log_level=chosen)
    # Logs go to stderr, never into a command's output (`--json`). Without -v or
    # EVENTFLEET_LOG_LEVEL only errors: each command reports its own outcome in one line.
    # `worker` configures itself from its settings (and reports unknown variables itself).
    configure(chosen or "error", env_log_format())
    if ctx.invoked_subcommand != "worker":
        for name in unknown_env_names():
            click.echo(f"warning: unknown setting {name}: ignored", err=True)


for _command in (
    basic.init,
    basic.worker,
    basic.health,
    exporter.exporter,
    produce.produce,
    producers.producers,
    state.state,
    status.status,
    dlq.dlq,
    verify.verify_cmd,
    archive.archive_cmd,
    reshard.reshard,
    chaos.chaos_cmd,
    bench.bench,
    up.up,
    localredis.redis_cmd,
    api.api,
):
    cli.add_command(_command)


def main(argv: list[str] | None = None) -> int:
    try:
        cli.main(args=argv, prog_name="eventfleet", standalone_mode=True)
    except SystemExit as exc:
        return int(exc.code or 0) if not isinstance(exc.code, str) else EXIT_USAGE
    return 0
