"""The ``eventfleet`` command: one group, every command registered here explicitly."""

from __future__ import annotations

import click

from eventfleet.cli import (
    archive,
    basic,
    bench,
    chaos,
    dlq,
    produce,
    reshard,
    state,
    status,
    up,
    verify,
)
from eventfleet.cli.context import EXIT_USAGE


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="eventfleet")
def cli() -> None:
    """eventfleet: an exactly-once event-sourced ledger on sharded Redis streams."""
    from store.logs import configure

    # Errors only, on stderr: a command reports failure in one line of its own, and a retry
    # warning must not land in its output (`--json`). `worker` configures from its settings.
    configure("error")


for _command in (
    basic.init,
    basic.worker,
    basic.health,
    produce.produce,
    state.state,
    status.status,
    dlq.dlq,
    verify.verify_cmd,
    archive.archive_cmd,
    reshard.reshard,
    chaos.chaos_cmd,
    bench.bench,
    up.up,
):
    cli.add_command(_command)


def main(argv: list[str] | None = None) -> int:
    try:
        cli.main(args=argv, prog_name="eventfleet", standalone_mode=True)
    except SystemExit as exc:
        return int(exc.code or 0) if not isinstance(exc.code, str) else EXIT_USAGE
    return 0
