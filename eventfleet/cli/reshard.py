"""``eventfleet reshard``: grow a live namespace's shard counts in place (``--user-shards``,
``--item-shards``: docs/DESIGN-DECISIONS.md, section 35), or export a quiet namespace's state
as seed events and compare two (the offline path, for shrinking: docs/SCALING.md)."""

from __future__ import annotations

import contextlib
import json
import signal
import sys
import threading
from pathlib import Path
from typing import Any

import click

from eventfleet.cli.context import EXIT_DIFFERENCES, EXIT_USAGE, UserError, user_errors
from eventfleet.cli.options import common, ctx_of, emit_json, json_option

WAIT_S = 300.0
"""How long the command waits, by default, for the workers to apply every split marker."""


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
@click.option(
    "--wait",
    "wait_s",
    type=click.FloatRange(0),
    default=WAIT_S,
    show_default=True,
    help="seconds to wait for the workers to apply the split markers; past it, exit 1 with "
    "the run recorded (re-run the same command to go on)",
)
@json_option
@click.pass_context
def reshard(
    ctx: click.Context,
    user_shards: int | None,
    item_shards: int | None,
    wait_s: float,
    as_json: bool,
) -> None:
    """Grow this namespace's shard counts in place, workers running and producers publishing
    (--user-shards, --item-shards: each a multiple of the current count; progress on stderr;
    re-run the same command after a kill or a timeout to continue: docs/SCALING.md, section
    7), or move a ledger to a namespace with other counts (export, compare)."""
    if ctx.invoked_subcommand is not None:
        if user_shards is not None or item_shards is not None:
            raise UserError("--user-shards and --item-shards go without a subcommand", EXIT_USAGE)
        return
    if user_shards is None and item_shards is None:
        raise UserError("give --user-shards and/or --item-shards, or a subcommand", EXIT_USAGE)
    grow(user_shards, item_shards, wait_s, as_json)


def grow(user_shards: int | None, item_shards: int | None, wait_s: float, as_json: bool) -> None:
    """Check the counts (refused: exit 2, nothing written), take the lease (held by another
    run: exit 1), run every step (``reshard_online.grow``, through a failover of up to 30 s:
    ``reshard_ride.ride_out``), and let the lease go whatever happens; a SIGTERM stops the
    run as a timeout does (the lease let go, a re-run goes on)."""
    from eventfleet.ops.reshard_online import ReshardBusy, ReshardRefused, Run, SeedsLate, plan
    from eventfleet.ops.reshard_ride import ride_out
    from eventfleet.store.errors import TRANSIENT

    def say(line: str) -> None:
        click.echo(f"reshard: {line}", err=True)

    c = ctx_of(None, None)
    with user_errors(c.settings):
        try:
            _old, users, items = plan(c.redis, c.keys, user_shards, item_shards)
        except ReshardRefused as exc:
            raise UserError(str(exc), EXIT_USAGE) from None
        except ValueError as exc:  # a recorded run's fields damaged: `status` names them too
            why = f"the reshard recorded in {c.keys.meta} does not parse: {exc}"
            raise UserError(why) from None
        run = Run(c.redis, c.keys)
        try:
            run.take()
        except ReshardBusy as exc:
            raise UserError(str(exc)) from None
        previous = _on_sigterm(_stop)
        try:
            done = ride_out(run, users, items, wait_s, say)
        except (ReshardBusy, SeedsLate) as exc:
            raise UserError(str(exc)) from None
        except ReshardRefused as exc:  # another target unfinished: nothing written
            raise UserError(str(exc), EXIT_USAGE) from None
        except _Stopped:
            raise UserError(
                "stopped by SIGTERM: the run stays recorded; re-run the same command to go on"
            ) from None
        finally:
            _on_sigterm(previous)
            with contextlib.suppress(*TRANSIENT):  # Redis gone: the lease lapses by itself
                run.release()
    if as_json:
        emit_json(done.as_json())
        return
    click.echo(
        f"grown from {done.old.users} user and {done.old.items} item shards to {users} and "
        f"{items}: the counts are published"
    )


class _Stopped(Exception):
    """SIGTERM during a run: unwound so that the lease is let go."""


def _stop(_signum: int, _frame: object) -> None:
    raise _Stopped


def _on_sigterm(handler: Any) -> Any:
    """Set SIGTERM's handler, returning the one before (only the main thread may: elsewhere,
    as when a test calls the command on a thread, nothing changes)."""
    if threading.current_thread() is not threading.main_thread():
        return handler
    return signal.signal(signal.SIGTERM, handler)


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
