"""``eventfleet archive DIR``: copy history out of Redis into segments on disk, so that the
workers may trim it and ``verify --archive`` can still fold every shard from its first event."""

from __future__ import annotations

from pathlib import Path

import click

from eventfleet.cli.context import UserError, user_errors
from eventfleet.cli.options import common, ctx_of, emit_json
from eventfleet.cli.progress import bar


@click.command("archive")
@common
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--segment-entries",
    type=click.IntRange(1, 10_000_000),
    default=100_000,
    show_default=True,
    help="entries per segment file at most",
)
@click.option("--json", "as_json", is_flag=True, help="print one JSON object")
def archive_cmd(
    redis_url: str | None,
    namespace: str | None,
    directory: Path,
    segment_entries: int,
    as_json: bool,
) -> None:
    """Archive every shard's events, outcomes and dead letters into DIRECTORY (gzip'd JSON
    lines and a manifest per stream). Safe to re-run and to kill: each run continues where the
    last one's manifest ends."""
    from eventfleet.ops.archive import ArchiveError, archive

    c = ctx_of(redis_url, namespace)
    with user_errors(c.settings):
        counts = c.counts()
        try:
            with bar("archiving", None) as advance:
                stats = archive(
                    c.redis,
                    c.keys,
                    counts,
                    directory,
                    segment_entries=segment_entries,
                    on_entries=advance,
                )
        except ArchiveError as exc:
            raise UserError(str(exc)) from None
        except OSError as exc:
            raise UserError(f"cannot write the archive in {directory}: {exc.strerror}") from None
    if as_json:
        emit_json(vars(stats))
        return
    rate = stats.entries / stats.seconds if stats.seconds > 0 else 0.0
    click.echo(
        f"archived {stats.entries} entries in {stats.segments} segments "
        f"({stats.bytes} bytes) to {directory} in {stats.seconds:.1f} s ({rate:,.0f} entries/s)"
    )
    if stats.removed_uncommitted:
        click.echo(f"removed {stats.removed_uncommitted} unfinished file(s) of an earlier run")
    if stats.gaps:
        click.echo(
            f"{stats.gaps} stream(s) had entries deleted from Redis before they were archived: "
            "recorded as gaps in their manifests (verify --archive reports them)"
        )
