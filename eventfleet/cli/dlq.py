"""``dlq``: list and re-drive dead letters."""

from __future__ import annotations

import click

from eventfleet.cli.context import user_errors
from eventfleet.cli.options import common, ctx_of, emit_json, json_option


@click.group()
def dlq() -> None:
    """Dead letters: list and re-drive."""


@dlq.command("list")
@common
@json_option
@click.option("--all", "include_all", is_flag=True, help="include re-driven letters")
def dlq_list(
    redis_url: str | None, namespace: str | None, as_json: bool, include_all: bool
) -> None:
    """List dead letters: shard, entry id, reason, error (re-driven ones only with --all)."""
    from eventfleet.ops.deadletters import list_dead

    c = ctx_of(redis_url, namespace)
    with user_errors(c.settings):
        dead = list_dead(c.redis, c.keys, c.counts(), include_redriven=include_all)
    if as_json:
        emit_json(dead)
        return
    for d in dead:
        click.echo(f"{d['shard']:<5} {d['entry_id']:<18} {d['reason']:<15} {d['error'][:80]}")
    click.echo(f"{len(dead)} dead letters")


@dlq.command("redrive")
@common
@click.option("--shard", default=None, help="only this shard (e.g. u3)")
@click.option("--reason", default=None, help="only letters with this reason")
@json_option
def dlq_redrive(
    redis_url: str | None,
    namespace: str | None,
    shard: str | None,
    reason: str | None,
    as_json: bool,
) -> None:
    """Publish dead letters again, re-stamped, to the shard that owns them."""
    from eventfleet.ops.deadletters import redrive

    c = ctx_of(redis_url, namespace)
    with user_errors(c.settings):
        sent, problems = redrive(c.redis, c.keys, c.counts(), shard=shard, reason=reason)
    if as_json:
        emit_json({"redriven": sent, "still_invalid": problems})
        return
    for p in problems:
        click.echo(p, err=True)
    click.echo(f"re-drove {sent} dead letters; {len(problems)} still invalid")
