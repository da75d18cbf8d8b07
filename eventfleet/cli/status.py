"""``status``: per-shard ownership, lag and pending; ``--wait-idle`` for scripts."""

from __future__ import annotations

import sys

import click

from eventfleet.cli.context import EXIT_FAILED, user_errors
from eventfleet.cli.options import common, ctx_of, emit_json


@click.command()
@common
@click.option("--json", "as_json", is_flag=True, help="print one JSON object on stdout")
@click.option(
    "--wait-idle",
    is_flag=True,
    help="wait until every shard is read and acked; exit 1 if not within --timeout",
)
@click.option(
    "--timeout",
    type=float,
    default=60.0,
    show_default=True,
    help="seconds to wait with --wait-idle",
)
def status(
    redis_url: str | None, namespace: str | None, as_json: bool, wait_idle: bool, timeout: float
) -> None:
    """Shards, owners, epochs, lag, pending, snapshot age and replay estimate."""
    from eventfleet.ops import status as st
    from eventfleet.ops.reshard_progress import progress

    c = ctx_of(redis_url, namespace)
    with user_errors(c.settings):
        counts = c.counts()
        if wait_idle:
            ok = st.wait_idle(c.redis, c.keys, counts, timeout)
            if as_json:
                emit_json({"idle": ok, "timeout_s": timeout})
            else:
                click.echo("idle" if ok else f"not idle after {timeout:g}s", err=not ok)
            sys.exit(0 if ok else EXIT_FAILED)
        rows = st.shard_status(c.redis, c.keys, counts)
        reshard = progress(c.redis, c.keys)
    if as_json:
        doc = st.as_json(rows)
        if reshard is not None:
            doc["reshard"] = reshard
        emit_json(doc)
        return
    click.echo(
        f"{'shard':<6} {'owner':<28} {'epoch':>5} {'inbox':>7} {'length':>8} {'lag':>7} "
        f"{'pending':>7} {'snap age':>8} {'replay':>7}"
    )
    for r in rows:
        age = "-" if r.snapshot_age_s is None else f"{r.snapshot_age_s:.0f}s"
        age = "BAD" if r.snapshot_error else age
        click.echo(
            f"{r.shard:<6} {(r.owner or '-')[:28]:<28} {r.epoch or '-':>5} {r.inbox:>7} "
            f"{r.length:>8} {r.lag if r.lag is not None else '?':>7} {r.pending:>7} "
            f"{age:>8} {r.to_replay:>7}"
        )
    tot = st.as_json(rows)["totals"]
    click.echo(
        f"total inbox {tot['inbox']}, lag {tot['lag']}, pending {tot['pending']}, "
        f"{tot['owned']}/{tot['shards']} shards owned, idle: {tot['idle']}"
    )
    for line in st.damage_lines(rows):
        click.echo(line)
    if reshard is not None and reshard["state"] != "done":
        click.echo(
            f"reshard {reshard['from']} -> {reshard['target']} (users,items): "
            f"{reshard['state']}; split: {' '.join(reshard['split']) or '-'}; "
            f"waiting: {' '.join(reshard['waiting']) or '-'}"
        )
        if reshard.get("dead_lettered"):
            click.echo(
                f"reshard: the owner of {' '.join(reshard['dead_lettered'])} dead-lettered the "
                "split marker (a worker of an older version): upgrade every worker, then re-run "
                "the same `eventfleet reshard` (docs/SCALING.md, section 7)"
            )
