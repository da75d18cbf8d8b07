"""The ``eventfleet`` command."""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request
from typing import Any

import click

from eventfleet.context import EXIT_FAILED, EXIT_USAGE, Ctx, make_settings, user_errors
from ledger.shards import ShardCounts, item_shard, user_shard

redis_option = click.option(
    "--redis",
    "redis_url",
    envvar="REDIS_URL",
    default=None,
    help="Redis URL [env REDIS_URL; default redis://localhost:6379/0]",
)
ns_option = click.option(
    "--namespace",
    envvar="EVENTFLEET_NAMESPACE",
    default=None,
    help="key namespace [env EVENTFLEET_NAMESPACE; default eventfleet]",
)


def common(fn: Any) -> Any:
    return redis_option(ns_option(fn))


def ctx_of(redis_url: str | None, namespace: str | None, **extra: Any) -> Ctx:
    return Ctx(make_settings(redis_url=redis_url, namespace=namespace, **extra))


def emit_json(doc: Any) -> None:
    click.echo(json.dumps(doc, indent=None, separators=(",", ":")))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="eventfleet")
def cli() -> None:
    """eventfleet: an exactly-once event-sourced ledger on sharded Redis streams."""
    from worker.logs import configure

    # Errors only, on stderr: a command reports failure in one line of its own, and a retry
    # warning must not land in its output (`--json`). `worker` configures from its settings.
    configure("error")


@cli.command()
@common
@click.option("--user-shards", default=16, show_default=True, type=click.IntRange(1, 4096))
@click.option("--item-shards", default=16, show_default=True, type=click.IntRange(1, 4096))
def init(redis_url: str | None, namespace: str | None, user_shards: int, item_shards: int) -> None:
    """Create the namespace: meta, shard streams and the consumer group (idempotent)."""
    from worker.namespace import init_namespace

    c = ctx_of(redis_url, namespace)
    with user_errors(c.settings):
        created = init_namespace(c.redis, c.keys, ShardCounts(user_shards, item_shards))
    word = "created" if created else "already initialised"
    click.echo(
        f"namespace {c.settings.namespace}: {word} "
        f"({user_shards} user shards, {item_shards} item shards)"
    )


@cli.command()
@common
@click.option(
    "--metrics-port",
    type=click.IntRange(0, 65535),
    default=None,
    help="port for /metrics /healthz /readyz [env EVENTFLEET_METRICS_PORT; 9108; 0 off]",
)
@click.option("--worker-id", default=None, help="consumer name [env EVENTFLEET_WORKER_ID]")
def worker(
    redis_url: str | None, namespace: str | None, metrics_port: int | None, worker_id: str | None
) -> None:
    """Run one worker process until SIGTERM (drain) or a second signal (hard stop)."""
    from worker.main import run_worker

    c = ctx_of(redis_url, namespace, metrics_port=metrics_port, worker_id=worker_id)
    sys.exit(run_worker(c.settings))


@cli.command()
@click.option("--port", type=int, envvar="EVENTFLEET_METRICS_PORT", default=9108, show_default=True)
@click.option("--ready", is_flag=True, help="check /readyz instead of /healthz")
def health(port: int, ready: bool) -> None:
    """Exit 0 when the local worker answers 200 on /healthz (or /readyz); for probes."""
    url = f"http://127.0.0.1:{port}/{'readyz' if ready else 'healthz'}"
    try:
        with urllib.request.urlopen(url, timeout=3) as resp:
            ok = resp.status == 200
    except (urllib.error.URLError, OSError):
        ok = False
    click.echo("ok" if ok else "unhealthy")
    sys.exit(0 if ok else EXIT_FAILED)


@cli.group()
def state() -> None:
    """Read balances, stock and order outcomes without asking any worker."""


@state.command("user")
@common
@click.argument("user_id", type=click.IntRange(1))
@click.option("--json", "as_json", is_flag=True)
def state_user(redis_url: str | None, namespace: str | None, user_id: int, as_json: bool) -> None:
    from eventfleet.reader import current

    c = ctx_of(redis_url, namespace)
    with user_errors(c.settings):
        counts = c.counts()
        st = current(c.redis, c.keys, user_shard(user_id, counts), counts).state
    balance = st.balances.get(user_id)
    if as_json:
        emit_json({"user_id": user_id, "balance": balance})
    elif balance is None:
        click.echo(f"user {user_id}: no events yet (balance 0)")
    else:
        click.echo(f"user {user_id}: balance {balance}")


@state.command("item")
@common
@click.argument("item_id")
@click.option("--json", "as_json", is_flag=True)
def state_item(redis_url: str | None, namespace: str | None, item_id: str, as_json: bool) -> None:
    from eventfleet.reader import current

    c = ctx_of(redis_url, namespace)
    with user_errors(c.settings):
        counts = c.counts()
        st = current(c.redis, c.keys, item_shard(item_id, counts), counts).state
    item = st.items.get(item_id)
    doc = None if item is None else {"price": item.price, "remain": item.remain}
    if as_json:
        emit_json({"item_id": item_id, "item": doc})
    elif item is None:
        click.echo(f"item {item_id}: unknown")
    else:
        click.echo(f"item {item_id}: remain {item.remain}, price {item.price}")


@state.command("order")
@common
@click.argument("order_id")
@click.option("--json", "as_json", is_flag=True)
def state_order(redis_url: str | None, namespace: str | None, order_id: str, as_json: bool) -> None:
    from eventfleet.reader import outcome_json, read_outcomes

    c = ctx_of(redis_url, namespace)
    found = None
    with user_errors(c.settings):
        counts = c.counts()
        for n in range(counts.users):
            for _seq, o in read_outcomes(c.redis, c.keys, f"u{n}"):
                if o.order_id == order_id:
                    found = outcome_json(o)
                    break
            if found:
                break
    if as_json:
        emit_json({"order_id": order_id, "outcome": found})
    elif found is None:
        click.echo(f"order {order_id}: no outcome yet")
    else:
        reason = f" ({found['reason']})" if found["reason"] else ""
        click.echo(
            f"order {order_id}: {found['status']}{reason}, user {found['user_id']}, "
            f"item {found['item_id']} x{found['qty']}, amount {found['amount']}"
        )


@state.command("all")
@common
@click.option("--json", "as_json", is_flag=True, help="print one JSON object")
def state_all_cmd(redis_url: str | None, namespace: str | None, as_json: bool) -> None:
    from eventfleet.progress import bar
    from eventfleet.reader import state_all

    c = ctx_of(redis_url, namespace)
    with user_errors(c.settings):
        counts = c.counts()
        with bar("reading shards (snapshot + tail replay)", len(counts.all_shards())) as advance:
            doc = state_all(c.redis, c.keys, counts, on_shard=advance)
    if as_json:
        emit_json(doc)
        return
    click.echo(f"users ({len(doc['users'])}):")
    for uid, u in doc["users"].items():
        click.echo(f"  {uid:>8}  balance {u['balance']}")
    click.echo(f"items ({len(doc['items'])}):")
    for iid, it in doc["items"].items():
        click.echo(f"  {iid:>12}  remain {it['remain']:>6}  price {it['price']}")
    click.echo(f"orders ({len(doc['orders'])}):")
    for oid, o in doc["orders"].items():
        reason = f" ({o['reason']})" if o["reason"] else ""
        click.echo(f"  {oid:>14}  {o['status']}{reason}")


@cli.command()
@common
@click.option("--json", "as_json", is_flag=True)
@click.option("--wait-idle", is_flag=True, help="wait until every shard is read and acked")
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
    from eventfleet import status as st

    c = ctx_of(redis_url, namespace)
    with user_errors(c.settings):
        counts = c.counts()
        if wait_idle:
            ok = st.wait_idle(c.redis, c.keys, counts, timeout)
            click.echo("idle" if ok else f"not idle after {timeout:g}s", err=not ok)
            sys.exit(0 if ok else EXIT_FAILED)
        rows = st.shard_status(c.redis, c.keys, counts)
    if as_json:
        emit_json(st.as_json(rows))
        return
    click.echo(
        f"{'shard':<6} {'owner':<28} {'epoch':>5} {'length':>8} {'lag':>7} "
        f"{'pending':>7} {'snap age':>8} {'replay':>7}"
    )
    for r in rows:
        age = "-" if r.snapshot_age_s is None else f"{r.snapshot_age_s:.0f}s"
        click.echo(
            f"{r.shard:<6} {(r.owner or '-')[:28]:<28} {r.epoch or '-':>5} "
            f"{r.length:>8} {r.lag if r.lag is not None else '?':>7} {r.pending:>7} "
            f"{age:>8} {r.to_replay:>7}"
        )
    tot = st.as_json(rows)["totals"]
    click.echo(
        f"total lag {tot['lag']}, pending {tot['pending']}, "
        f"{tot['owned']}/{tot['shards']} shards owned, idle: {tot['idle']}"
    )


@cli.group()
def dlq() -> None:
    """Dead letters: list and re-drive."""


@dlq.command("list")
@common
@click.option("--json", "as_json", is_flag=True)
@click.option("--all", "include_all", is_flag=True, help="include re-driven letters")
def dlq_list(
    redis_url: str | None, namespace: str | None, as_json: bool, include_all: bool
) -> None:
    from eventfleet.deadletters import list_dead

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
def dlq_redrive(
    redis_url: str | None, namespace: str | None, shard: str | None, reason: str | None
) -> None:
    """Publish dead letters again, re-stamped, to the shard that owns them."""
    from eventfleet.deadletters import redrive

    c = ctx_of(redis_url, namespace)
    with user_errors(c.settings):
        sent, problems = redrive(c.redis, c.keys, c.counts(), shard=shard, reason=reason)
    for p in problems:
        click.echo(p, err=True)
    click.echo(f"re-drove {sent} dead letters; {len(problems)} still invalid")


def load_commands() -> None:
    """Every module ``eventfleet/cli_*.py`` adds its commands to ``cli`` when imported."""
    import importlib
    import pkgutil

    import eventfleet

    for mod in sorted(m.name for m in pkgutil.iter_modules(eventfleet.__path__)):
        if mod.startswith("cli_"):
            importlib.import_module(f"eventfleet.{mod}")


def main(argv: list[str] | None = None) -> int:
    load_commands()

    try:
        cli.main(args=argv, prog_name="eventfleet", standalone_mode=True)
    except SystemExit as exc:
        return int(exc.code or 0) if not isinstance(exc.code, str) else EXIT_USAGE
    return 0
