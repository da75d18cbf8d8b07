"""``producers``: add, list and remove producer identities (an ACL user and own inboxes each)."""

from __future__ import annotations

from pathlib import Path

import click

from eventfleet.cli.context import EXIT_FAILED, EXIT_USAGE, UserError, user_errors
from eventfleet.cli.options import common, ctx_of, emit_json, json_option


@click.group()
def producers() -> None:
    """Producer identities: each has its own Redis user and inboxes, and its sources, seqs
    and idempotency keys count within its name only."""


def _check(name: str) -> None:
    from eventfleet.store.producers import ProducerNameError, check_name

    try:
        check_name(name)
    except ProducerNameError as exc:
        raise UserError(str(exc), EXIT_USAGE) from None


def _unsaved(unsaved: list[str], line: str | None) -> None:
    if not unsaved:
        return
    click.echo(
        f"warning: ACL SAVE failed ({unsaved[0]}): the change holds until Redis restarts "
        "unless the ACL file Redis loads has this line (the shipped set-ups declare theirs: "
        "docs/DEPLOYMENT.md, producer identities)" + (f":\n{line}" if line else ""),
        err=True,
    )


@producers.command("add")
@common
@json_option
@click.option(
    "--password-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="set the password in this file (a deployment's secret) instead of a new one; "
    "the URL printed then carries the user only",
)
@click.argument("name")
def producers_add(
    redis_url: str | None,
    namespace: str | None,
    as_json: bool,
    password_file: Path | None,
    name: str,
) -> None:
    """Create producer NAME (or give it a fresh password) and print its REDIS_URL."""
    from eventfleet.ops.producers import WeakPassword, add

    _check(name)
    password = None
    if password_file is not None:
        password = password_file.read_text(encoding="utf-8").strip()
    c = ctx_of(redis_url, namespace)
    with user_errors(c.settings):
        try:
            added = add(c.redis, c.keys, c.counts(), name, c.settings.redis_url, password)
        except WeakPassword as exc:
            raise UserError(str(exc), EXIT_USAGE) from None
    _unsaved(added.unsaved, added.acl_line)
    if as_json:
        emit_json({"name": added.name, "redis_url": added.redis_url})
        return
    click.echo(f"REDIS_URL={added.redis_url}")


@producers.command("list")
@common
@json_option
def producers_list(redis_url: str | None, namespace: str | None, as_json: bool) -> None:
    """Each producer with the events waiting in its inboxes and those dropped (past its
    bound, or not an event); ``legacy`` is the shared inbox."""
    from eventfleet.ops.producers import backlogs

    c = ctx_of(redis_url, namespace)
    with user_errors(c.settings):
        rows = backlogs(c.redis, c.keys, c.counts())
    if as_json:
        emit_json([{"name": b.name, "waiting": b.waiting, "dropped": b.dropped} for b in rows])
        return
    click.echo(f"{'producer':<34} {'waiting':>9} {'dropped':>9}")
    for b in rows:
        click.echo(f"{b.name:<34} {b.waiting:>9} {b.dropped:>9}")


@producers.command("remove")
@common
@click.option(
    "--wait",
    "wait_s",
    type=click.FloatRange(0),
    default=30.0,
    show_default=True,
    help="seconds to wait for workers to move what it published",
)
@click.argument("name")
def producers_remove(
    redis_url: str | None, namespace: str | None, wait_s: float, name: str
) -> None:
    """Delete producer NAME's Redis user at once, and unregister it once workers have moved
    every event it published (nothing it was told was accepted is lost)."""
    from eventfleet.ops.producers import remove

    _check(name)
    c = ctx_of(redis_url, namespace)
    with user_errors(c.settings):
        try:
            left, unsaved = remove(c.redis, c.keys, c.counts(), name, wait_s)
        except KeyError:
            raise UserError(f"no producer {name!r} in namespace {c.keys.ns}", EXIT_USAGE) from None
    _unsaved(unsaved, None)
    if left:
        raise UserError(
            f"producer {name}: its user is deleted, but {left} events it published still wait "
            "for a worker; it stays registered so they are moved: run `producers remove` again",
            EXIT_FAILED,
        )
    click.echo(f"removed producer {name}")
