"""``state``: balances, stock and order outcomes, read from Redis alone."""

from __future__ import annotations

from typing import Any

import click

from eventfleet.cli.context import user_errors
from eventfleet.cli.options import common, ctx_of, emit_json, json_option
from ledger.shards import item_shard, user_shard


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
@json_option
def state_item(redis_url: str | None, namespace: str | None, item_id: str, as_json: bool) -> None:
    """An item's stock and price (snapshot plus the log's tail, read from Redis alone)."""
    from eventfleet.ops.reader import current

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
@json_option
def state_order(redis_url: str | None, namespace: str | None, order_id: str, as_json: bool) -> None:
    """An order's outcome (confirmed, rejected with the reason, and how many duplicate orders
    reused its id), if it has one yet."""
    from eventfleet.ops.reader import add_outcome, read_outcomes

    c = ctx_of(redis_url, namespace)
    orders: dict[str, Any] = {}
    with user_errors(c.settings):
        counts = c.counts()
        for n in range(counts.users):
            for _seq, o in read_outcomes(c.redis, c.keys, f"u{n}"):
                if o.order_id == order_id:
                    add_outcome(orders, o)
    found = orders.get(order_id)
    if as_json:
        emit_json({"order_id": order_id, "outcome": found})
    elif found is None:
        click.echo(f"order {order_id}: no outcome yet")
    else:
        reason = f" ({found['reason']})" if found["reason"] else ""
        dups = found["duplicates"]
        click.echo(
            f"order {order_id}: {found['status']}{reason}, user {found['user_id']}, "
            f"item {found['item_id']} x{found['qty']}, amount {found['amount']}"
            + (f"; {dups} duplicate order(s) with this id changed nothing" if dups else "")
        )


@state.command("all")
@common
@json_option
def state_all_cmd(redis_url: str | None, namespace: str | None, as_json: bool) -> None:
    """Every user's balance, every item's stock and every order's outcome."""
    from eventfleet.cli.progress import bar
    from eventfleet.ops.reader import state_all

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
        dups = f"  ({o['duplicates']} duplicates)" if o["duplicates"] else ""
        click.echo(f"  {oid:>14}  {o['status']}{reason}{dups}")
