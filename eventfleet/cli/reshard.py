"""``eventfleet reshard``: export a quiet namespace's state as seed events, compare two."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from eventfleet.cli.context import EXIT_DIFFERENCES, EXIT_USAGE, UserError, user_errors
from eventfleet.cli.options import common, ctx_of, emit_json, json_option


@click.group()
def reshard() -> None:
    """Move a ledger to a namespace with more shards (docs/SCALING.md)."""


@reshard.command("export")
@common
@click.option(
    "--cut",
    "cut_path",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    required=True,
    help="write the state at the cut here (JSON), for `reshard compare`",
)
def export(redis_url: str | None, namespace: str | None, cut_path: Path) -> None:
    """Print seed events (JSON lines) rebuilding this namespace's balances and stock.

    Refuses unless the namespace is idle (every entry applied, no saga step in flight):
    stop the producers and wait with `status --wait-idle` first.
    """
    from eventfleet.ops.reader import state_all
    from eventfleet.ops.reshard import seed_events, sold_out
    from eventfleet.ops.status import is_idle

    c = ctx_of(redis_url, namespace)
    with user_errors(c.settings):
        counts = c.counts()
        if not is_idle(c.redis, c.keys, counts):
            raise UserError(
                f"namespace {c.settings.namespace} is not idle: stop the producers and run "
                "`eventfleet status --wait-idle` first"
            )
        doc = state_all(c.redis, c.keys, counts)
        if not is_idle(c.redis, c.keys, counts):
            raise UserError("events arrived during the export: stop every producer first")
    cut_path.write_text(json.dumps(doc, separators=(",", ":")), encoding="utf-8")
    seeds = seed_events(doc)
    for ev in seeds:
        click.echo(ev.model_dump_json())
    click.echo(
        f"{len(seeds)} seed events for {len(doc['users'])} users and {len(doc['items'])} "
        f"items; {len(sold_out(doc))} sold-out items are not carried over",
        err=True,
    )


@reshard.command("compare")
@common
@click.option(
    "--cut",
    "cut_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    required=True,
    help="the file `reshard export --cut` wrote from the old namespace",
)
@json_option
def compare_cmd(
    redis_url: str | None, namespace: str | None, cut_path: Path, as_json: bool
) -> None:
    """Check that the new namespace (--namespace), seeded and idle, holds the state at the cut.

    Exit 0 when it does, 3 when they differ, 1 when Redis cannot be read."""
    from eventfleet.ops.reader import state_all
    from eventfleet.ops.reshard import compare, sold_out

    try:
        cut = json.loads(cut_path.read_text(encoding="utf-8"))
        if not isinstance(cut, dict) or not {"users", "items"} <= cut.keys():
            raise ValueError("no users and items")
    except (ValueError, UnicodeDecodeError) as exc:
        raise UserError(
            f"{cut_path}: not a cut written by `reshard export --cut` ({exc})", EXIT_USAGE
        ) from None
    c = ctx_of(redis_url, namespace)
    with user_errors(c.settings):
        new = state_all(c.redis, c.keys, c.counts())
    diffs = compare(cut, new)
    if as_json:
        emit_json(
            {
                "users": len(cut["users"]),
                "items": len(cut["items"]),
                "sold_out": len(sold_out(cut)),
                "differences": len(diffs),
                "first_differences": diffs[:20],
            }
        )
        sys.exit(0 if not diffs else EXIT_DIFFERENCES)
    for line in diffs[:20]:
        click.echo(line)
    click.echo(
        f"{len(cut['users'])} users and {len(cut['items'])} items at the cut "
        f"({len(sold_out(cut))} sold out, not carried over): {len(diffs)} differences"
    )
    sys.exit(0 if not diffs else EXIT_DIFFERENCES)
