"""``eventfleet reshard``: export a quiet namespace's state as seed events, compare two."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from eventfleet.cli.context import EXIT_DIFFERENCES, EXIT_USAGE, UserError, user_errors
from eventfleet.cli.options import common, ctx_of, emit_json, json_option


@click.group(invoke_without_command=True)
@click.option(
    "--user-shards",
    type=click.IntRange(1),
    default=None,
    help="grow this namespace to this many user shards (a multiple of the current count)",
)
@click.option(
    "--item-shards",
    type=click.IntRange(1),
    default=None,
    help="grow this namespace to this many item shards (a multiple of the current count)",
)
@click.pass_context
def reshard(ctx: click.Context, user_shards: int | None, item_shards: int | None) -> None:
    """Grow this namespace's shard counts in place (--user-shards, --item-shards; not
    available yet, docs/DESIGN-DECISIONS.md section 35), or move a ledger to a namespace with
    more shards (export, compare: docs/SCALING.md)."""
    if ctx.invoked_subcommand is not None:
        if user_shards is not None or item_shards is not None:
            raise UserError("--user-shards and --item-shards go without a subcommand", EXIT_USAGE)
        return
    if user_shards is None and item_shards is None:
        raise UserError("give --user-shards and/or --item-shards, or a subcommand", EXIT_USAGE)
    grow(user_shards, item_shards)


def grow(user_shards: int | None, item_shards: int | None) -> None:
    """Check the growth and the lease, then refuse: nothing publishes new counts yet."""
    from eventfleet.ops.reshard_online import ReshardBusy, ReshardRefused, Run, check_growth

    c = ctx_of(None, None)
    with user_errors(c.settings):
        current = c.counts()
        users = current.users if user_shards is None else user_shards
        items = current.items if item_shards is None else item_shards
        try:
            check_growth(current, users, items)
        except ReshardRefused as exc:
            raise UserError(str(exc), EXIT_USAGE) from None
        run = Run(c.redis, c.keys)
        try:
            run.take()
        except ReshardBusy as exc:
            raise UserError(str(exc)) from None
        run.release()
    raise UserError(
        f"growing to {users} user and {items} item shards is not available yet: the workers "
        "of this version do not apply split markers (docs/DESIGN-DECISIONS.md, section 35); "
        "nothing was changed. Move to a new namespace instead (docs/SCALING.md, section 7)"
    )


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
