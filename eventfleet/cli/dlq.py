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
@click.option("--dry-run", is_flag=True, help="list what would be re-driven; write nothing")
@json_option
def dlq_redrive(
    redis_url: str | None,
    namespace: str | None,
    shard: str | None,
    reason: str | None,
    dry_run: bool,
    as_json: bool,
) -> None:
    """Publish dead letters again to the shard that owns them, each once, however many
    re-drives run (at once, or again after a crash)."""
    from eventfleet.ops.deadletters import redrive

    c = ctx_of(redis_url, namespace)
    with user_errors(c.settings):
        sent, problems = redrive(
            c.redis, c.keys, c.counts(), shard=shard, reason=reason, dry_run=dry_run
        )
    if as_json:
        emit_json(
            {
                "redriven": len(sent),
                "still_invalid": problems,
                "dry_run": dry_run,
                "letters": [
                    {k: d[k] for k in ("shard", "dlq_id", "entry_id", "reason", "seq", "to")}
                    for d in sent
                ],
            }
        )
        return
    for p in problems:
        click.echo(p, err=True)
    verb = "would re-drive" if dry_run else "re-drove"
    for d in sent if dry_run else []:
        click.echo(f"{d['shard']:<5} {d['entry_id']:<18} {d['reason']:<15} -> {d['to']}")
    click.echo(f"{verb} {len(sent)} dead letters; {len(problems)} still invalid")
