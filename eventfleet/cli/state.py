"""``state``: balances, stock and order outcomes, read from Redis alone."""

from __future__ import annotations

import sys

import click

from eventfleet.cli.context import user_errors
from eventfleet.cli.options import common, ctx_of, emit_json, json_option
from eventfleet.ledger.shards import item_shard, user_shard

EXIT_NO_OUTCOME = 4
"""``state order``: the order has no outcome: no such order, or not applied yet."""


def _warn(damaged: str) -> None:
    if damaged:
        click.echo(f"warning: {damaged}", err=True)


@click.group()
def state() -> None:
    """Read balances, stock and order outcomes without asking any worker."""


@state.command("user")
@common
@click.argument("user_id", type=click.IntRange(1))
@json_option
def state_user(redis_url: str | None, namespace: str | None, user_id: int, as_json: bool) -> None:
    """A user's balance (snapshot plus the log's tail, read from Redis alone)."""
    from eventfleet.ops.reader import current
    from eventfleet.ops.reshard_progress import holding_shard

    c = ctx_of(redis_url, namespace)
    with user_errors(c.settings):
        counts = c.counts()
        shard = holding_shard(c.redis, c.keys, counts, lambda k: user_shard(user_id, k))
        folded = current(c.redis, c.keys, shard, counts)
    _warn(folded.damaged)
    st = folded.state
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
@json_option
def state_item(redis_url: str | None, namespace: str | None, item_id: str, as_json: bool) -> None:
    """An item's stock and price (snapshot plus the log's tail, read from Redis alone)."""
    from eventfleet.ops.reader import current
    from eventfleet.ops.reshard_progress import holding_shard

    c = ctx_of(redis_url, namespace)
    with user_errors(c.settings):
        counts = c.counts()
        shard = holding_shard(c.redis, c.keys, counts, lambda k: item_shard(item_id, k))
        folded = current(c.redis, c.keys, shard, counts)
    _warn(folded.damaged)
    st = folded.state
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
@click.option(
    "--user",
    "user_id",
    type=click.IntRange(1),
    default=None,
    help="only this user's order (an order is a user's order id)",
)
@json_option
def state_order(
    redis_url: str | None, namespace: str | None, order_id: str, user_id: int | None,
    as_json: bool,
) -> None:  # fmt: skip
    """An order's outcome (confirmed, rejected with the reason, and how many duplicate orders
    reused its id), one line per user that used the id; exit 4 when it has none (no such
    order, or not applied yet)."""
    from eventfleet.ops.reader import order_outcomes

    c = ctx_of(redis_url, namespace)
    with user_errors(c.settings):
        found = order_outcomes(c.redis, c.keys, c.counts(), order_id, user_id)
    if as_json:
        emit_json({"order_id": order_id, "outcome": found[0] if found else None,
                   "outcomes": found})  # fmt: skip
    elif not found:
        click.echo(f"order {order_id}: no outcome (unknown, or not applied yet)")
    for o in [] if as_json else found:
        reason = f" ({o['reason']})" if o["reason"] else ""
        dups = o["duplicates"]
        click.echo(
            f"order {order_id}: {o['status']}{reason}, user {o['user_id']}, "
            f"item {o['item_id']} x{o['qty']}, amount {o['amount']}"
            + (f"; {dups} duplicate order(s) with this id changed nothing" if dups else "")
        )
    if not found:
        sys.exit(EXIT_NO_OUTCOME)


@state.command("all")
@common
@json_option
def state_all_cmd(redis_url: str | None, namespace: str | None, as_json: bool) -> None:
    """Every user's balance, every item's stock and every order's outcome (while an online
    reshard runs, each key from the shard that holds it now)."""
    from eventfleet.cli.progress import bar
    from eventfleet.ops.reader import state_all
    from eventfleet.ops.reshard_progress import holders

    c = ctx_of(redis_url, namespace)
    with user_errors(c.settings):
        counts = c.counts()
        held = holders(c.redis, c.keys, counts)  # a running reshard's seeded shards too
        with bar("reading shards (snapshot + tail replay)", len(held.shards)) as advance:
            doc = state_all(c.redis, c.keys, counts, on_shard=advance, held=held)
    for line in doc.get("damaged", []):
        _warn(line)
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
    for oid, first in doc["orders"].items():
        for o in [first, *first.get("others", [])]:  # one line per user that used the id
            reason = f" ({o['reason']})" if o["reason"] else ""
            dups = f"  ({o['duplicates']} duplicates)" if o["duplicates"] else ""
            click.echo(f"  {oid:>14}  user {o['user_id']:<8} {o['status']}{reason}{dups}")
