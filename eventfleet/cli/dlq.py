"""``dlq``: list and re-drive dead letters."""

from __future__ import annotations

import click

from eventfleet.cli.context import EXIT_USAGE, UserError, user_errors
from eventfleet.cli.options import common, ctx_of, emit_json, json_option


@click.group()
def dlq() -> None:
    """Dead letters: list, re-drive, discard."""


@dlq.command("list")
@common
@json_option
@click.option("--all", "include_all", is_flag=True, help="include re-driven and discarded letters")
def dlq_list(
    redis_url: str | None, namespace: str | None, as_json: bool, include_all: bool
) -> None:
    """List dead letters: shard, entry id, reason, error (re-driven and discarded ones only
    with --all)."""
    from eventfleet.ops.deadletters import list_dead

    c = ctx_of(redis_url, namespace)
    with user_errors(c.settings):
        dead = list_dead(c.redis, c.keys, c.counts(), include_redriven=include_all)
    if as_json:
        emit_json(dead)
        return
    for d in dead:
        done = " [discarded]" if d["discarded"] else " [re-driven]" if d["redriven"] else ""
        click.echo(f"{d['shard']:<5} {d['entry_id']:<18} {d['reason']:<15} {d['error'][:80]}{done}")
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
    from eventfleet.ops.deadletters import check_filters, redrive

    c = ctx_of(redis_url, namespace)
    with user_errors(c.settings):
        counts = c.counts()
        try:
            check_filters(counts, shard, reason)
        except ValueError as exc:
            raise UserError(str(exc), EXIT_USAGE) from None
        sent, problems = redrive(
            c.redis, c.keys, counts, shard=shard, reason=reason, dry_run=dry_run
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


@dlq.command("discard")
@common
@click.argument("entry_ids", nargs=-1)
@click.option("--shard", default=None, help="only this shard (e.g. u3)")
@click.option("--reason", default=None, help="only letters with this reason")
@click.option(
    "--undecodable",
    is_flag=True,
    help="every letter a re-drive would leave as still invalid (within --shard/--reason)",
)
@click.option("--note", default="", help="why, kept with each discarded letter")
@click.option("--dry-run", is_flag=True, help="list what would be discarded; write nothing")
@json_option
def dlq_discard(
    redis_url: str | None,
    namespace: str | None,
    entry_ids: tuple[str, ...],
    shard: str | None,
    reason: str | None,
    undecodable: bool,
    note: str,
    dry_run: bool,
    as_json: bool,
) -> None:
    """Set dead letters aside for good (ENTRY_IDS as `dlq list` shows them, or
    --undecodable): no longer listed or re-driven. The letter stays in its dead-letter
    stream, so `verify` still finds every record; the discard is recorded with --note."""
    from eventfleet.ops.deadletters import check_filters, discard

    if not entry_ids and not undecodable:
        raise UserError("name the letters to discard (ENTRY_IDS) or give --undecodable", EXIT_USAGE)
    c = ctx_of(redis_url, namespace)
    with user_errors(c.settings):
        counts = c.counts()
        try:
            check_filters(counts, shard, reason)
            gone = discard(
                c.redis,
                c.keys,
                counts,
                shard=shard,
                reason=reason,
                entry_ids=entry_ids,
                undecodable=undecodable,
                note=note,
                dry_run=dry_run,
            )
        except ValueError as exc:
            raise UserError(str(exc), EXIT_USAGE) from None
    if as_json:
        emit_json(
            {
                "discarded": len(gone),
                "dry_run": dry_run,
                "letters": [
                    {k: d[k] for k in ("shard", "dlq_id", "entry_id", "reason", "seq")}
                    for d in gone
                ],
            }
        )
        return
    for d in gone:
        click.echo(f"{d['shard']:<5} {d['entry_id']:<18} {d['reason']:<15} {d['error'][:60]}")
    verb = "would discard" if dry_run else "discarded"
    click.echo(f"{verb} {len(gone)} dead letters")
