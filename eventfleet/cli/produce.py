"""``eventfleet produce``: publish events idempotently, through ``eventfleet.Client`` (the one
way in: what an application calls is what these commands run)."""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO

import click

from eventfleet.cli.context import EXIT_USAGE, Ctx, UserError, user_errors
from eventfleet.cli.options import common, ctx_of, emit_json, json_option
from eventfleet.cli.progress import bar
from eventfleet.client import (
    BacklogFull,
    Client,
    ConfigurationError,
    InvalidEvent,
    NotInitialised,
    OrderResult,
    Receipt,
    Unavailable,
    WaitTimeout,
)
from eventfleet.ledger.events import AddItem, ExternalEvent, Order, Topup
from eventfleet.producer.client import check_key, source_of
from eventfleet.producer.files import BadLine, parse_lines
from eventfleet.producer.workload import mixed

EXIT_REJECTED = 3
"""``produce order --wait``: the order was rejected (out of stock, unknown item, funds)."""
EXIT_DUPLICATE = 4
"""``produce order --wait``: the order id was decided before; that first outcome stands."""
EXIT_TIMEOUT = 5
"""``produce order --wait``: no outcome within ``--timeout``."""
EXIT_BACKLOG_FULL = 6
"""``produce``: this producer identity's own backlog on a shard is full (it publishes faster
than the fleet applies, or floods); nothing more was accepted. Run again later: the same
source, seqs or keys apply each event once."""

key_option = click.option(
    "--key",
    default=None,
    help="idempotency key: at most one event with this key takes effect (within the "
    "namespace's dedup window), however often it is sent",
)


@click.group()
@click.option(
    "--wait-replicas",
    type=click.IntRange(0),
    default=0,
    help="after each chunk, WAIT until this many replicas have it",
)
@click.pass_context
def produce(ctx: click.Context, wait_replicas: int) -> None:
    """Publish events (idempotent: a retried publish takes effect once)."""
    ctx.obj = {"wait_replicas": wait_replicas}


@contextmanager
def client_errors(c: Ctx) -> Iterator[None]:
    """The client's errors as one line and an exit code (as ``user_errors`` maps the rest):
    bad input and a missing namespace exit 2, Redis refusing or not answering exits 1."""
    with user_errors(c.settings):
        try:
            yield
        except (InvalidEvent, NotInitialised) as exc:
            raise UserError(str(exc), EXIT_USAGE) from None
        except BacklogFull as exc:
            raise UserError(f"{exc} (retry in {exc.retry_after:g} s)", EXIT_BACKLOG_FULL) from None
        except (ConfigurationError, Unavailable) as exc:
            raise UserError(str(exc)) from None


def _client(c: Ctx, wait_replicas: int) -> Client:
    """The client on the command's connection (connected and pinged as every command is)."""
    return Client(
        c.redis, c.settings.namespace, url=c.settings.redis_url, wait_replicas=wait_replicas
    )


def _one(
    c: Ctx, event: ExternalEvent, wait_replicas: int, as_json: bool, key: str | None = None
) -> None:
    """Publish one event (with an idempotency key, when given)."""
    if key is not None:
        try:
            check_key(key)
        except ValueError as exc:
            raise UserError(str(exc), EXIT_USAGE) from None
    with client_errors(c):
        receipt = _client(c, wait_replicas).publish(event, key=key)
    if as_json:
        doc: dict[str, object] = {"type": event.type, "shard": receipt.shard}
        doc |= {"source": receipt.source, "seq": receipt.seq}
        if isinstance(event, Order):
            doc["order_id"] = event.order_id
        emit_json(doc)
        return
    where = f"{receipt.shard}'s inbox (seq {receipt.seq} of {receipt.source})"
    click.echo(f"published {event.type} to {where}")


def _build(factory: type[ExternalEvent], **fields: object) -> ExternalEvent:
    from pydantic import ValidationError

    from eventfleet.ledger.codec import describe_validation_error

    try:
        return factory.model_validate(fields)
    except ValidationError as err:
        raise UserError(describe_validation_error(err), EXIT_USAGE) from None


@produce.command("topup")
@common
@click.option("--user", "user_id", type=int, required=True, help="user id (an integer >= 1)")
@click.option("--amount", type=int, required=True, help="minor units (cents), > 0")
@key_option
@json_option
@click.pass_obj
def p_topup(
    obj: dict[str, int],
    redis_url: str | None,
    namespace: str | None,
    user_id: int,
    amount: int,
    key: str | None,
    as_json: bool,
) -> None:
    """Publish one top-up: credit a user's balance."""
    ev = _build(Topup, user_id=user_id, amount=amount)
    _one(ctx_of(redis_url, namespace), ev, obj["wait_replicas"], as_json, key)


@produce.command("add-item")
@common
@click.option("--item", "item_id", required=True, help="item id (a short name)")
@click.option("--count", type=int, required=True, help="units added to the stock, > 0")
@click.option("--price", type=int, required=True, help="minor units (cents), >= 0")
@key_option
@json_option
@click.pass_obj
def p_add_item(
    obj: dict[str, int],
    redis_url: str | None,
    namespace: str | None,
    item_id: str,
    count: int,
    price: int,
    key: str | None,
    as_json: bool,
) -> None:
    """Publish one add_item: add stock to an item and set its price."""
    ev = _build(AddItem, item_id=item_id, count=count, price=price)
    _one(ctx_of(redis_url, namespace), ev, obj["wait_replicas"], as_json, key)


@produce.command("order")
@common
@click.option("--user", "user_id", type=int, required=True, help="the buyer's user id")
@click.option("--item", "item_id", required=True, help="the item bought")
@click.option("--qty", type=int, required=True, help="units, > 0")
@click.option("--order-id", default=None, help="default: a fresh unique id, printed")
@click.option(
    "--wait",
    is_flag=True,
    help="wait for the outcome; exit 0 confirmed, 3 rejected, 4 duplicate id, 5 timeout",
)
@click.option(
    "--timeout",
    "timeout_s",
    type=click.FloatRange(min=0),
    default=30.0,
    show_default=True,
    help="seconds --wait waits",
)
@json_option
@click.pass_obj
def p_order(
    obj: dict[str, int],
    redis_url: str | None,
    namespace: str | None,
    user_id: int,
    item_id: str,
    qty: int,
    order_id: str | None,
    wait: bool,
    timeout_s: float,
    as_json: bool,
) -> None:
    """Publish one order: reserve stock, then charge the user (or release and reject). With
    --wait, wait for its outcome and exit by it."""
    oid = order_id or f"o-{uuid.uuid4().hex[:16]}"
    ev = _build(Order, order_id=oid, user_id=user_id, item_id=item_id, qty=qty)
    assert isinstance(ev, Order)
    c = ctx_of(redis_url, namespace)
    if not wait:
        _one(c, ev, obj["wait_replicas"], as_json)
        if order_id is None and not as_json:
            click.echo(f"order id: {oid}")
        return

    def published(receipt: Receipt) -> None:
        if not as_json:
            click.echo(f"published order {oid} as {receipt.ref}; waiting for its outcome")

    outcome: OrderResult | None
    with client_errors(c):
        client = _client(c, obj["wait_replicas"])
        try:
            outcome = client.order(
                user_id, item_id, qty, order_id=oid, wait=timeout_s, on_published=published
            )
            ref = outcome.receipt.ref
        except WaitTimeout as exc:
            assert exc.receipt is not None  # an order's wait: the receipt is there
            outcome, ref = None, exc.receipt.ref
    sys.exit(_report_outcome(oid, ref, outcome, timeout_s, as_json))


def _report_outcome(
    oid: str, ref: str, o: OrderResult | None, timeout_s: float, as_json: bool
) -> int:
    """Print an order's outcome (or the timeout); return the exit code it means."""
    if o is None:
        if as_json:
            emit_json({"order_id": oid, "ref": ref, "status": "timeout"})
        else:
            click.echo(f"order {oid}: no outcome within {timeout_s:g} s", err=True)
        return EXIT_TIMEOUT
    if as_json:  # the keys and their order as the outcome record's
        emit_json(
            {
                "order_id": oid,
                "user_id": o.user_id,
                "item_id": o.item_id,
                "qty": o.qty,
                "amount": o.amount,
                "status": o.status,
                "reason": o.reason,
                "first": o.first,
                "ref": ref,
            }
        )
    else:
        why = f" ({o.reason})" if o.reason else ""
        first = f"; the order id was {o.first} before and that stands" if o.first else ""
        click.echo(
            f"order {oid}: {o.status}{why}, user {o.user_id}, item {o.item_id} x{o.qty}, "
            f"amount {o.amount}{first}"
        )
    return {"confirmed": 0, "rejected": EXIT_REJECTED}.get(o.status, EXIT_DUPLICATE)


@produce.command("file")
@common
@click.argument("path", type=click.File("rb"))
@click.option(
    "--source",
    "name",
    default=None,
    help="a stable producer name: each line's seq is its line number, so running the same "
    "file again with the same name (after a crash at any point) applies every line once",
)
@json_option
@click.pass_obj
def p_file(
    obj: dict[str, int],
    redis_url: str | None,
    namespace: str | None,
    path: IO[bytes],
    name: str | None,
    as_json: bool,
) -> None:
    """Publish a JSON-lines file (- for stdin); the whole file is validated first."""
    if name is not None:
        try:
            source_of(name)
        except ValueError as exc:
            raise UserError(str(exc), EXIT_USAGE) from None
    numbers: list[int] | None = [] if name is not None else None
    try:
        events = parse_lines(path, numbers)
    except BadLine as exc:
        name_ = getattr(path, "name", "input")
        if exc.count == 1:
            raise UserError(f"{name_}: {exc}; nothing was published", EXIT_USAGE) from None
        shown = "".join(f"\n  line {n}: {why}" for n, why in exc.lines)
        more = exc.count - len(exc.lines)
        raise UserError(
            f"{name_}: {exc.count} bad lines; nothing was published{shown}"
            + (f"\n  ... and {more} more" if more else ""),
            EXIT_USAGE,
        ) from None
    c = ctx_of(redis_url, namespace)
    with client_errors(c), bar("publishing", len(events)) as advance:
        done = _client(c, obj["wait_replicas"]).publish_many(
            events, source=name, seqs=numbers if numbers is not None else "position",
            progress=advance,
        )  # fmt: skip
    if as_json:
        emit_json({"published": done.count} | ({"source": done.source} if name else {}))
    else:
        click.echo(f"published {done.count} events" + (f" as source p:{name}" if name else ""))


@produce.command("load")
@common
@click.option("--events", "n", type=click.IntRange(1), required=True, help="how many events")
@click.option("--seed", type=int, default=1, show_default=True, help="seed of the workload")
@click.option(
    "--rate", type=click.FloatRange(min=0), default=0, help="events/s; 0 = as fast as possible"
)
@click.option(
    "--users", type=click.IntRange(1), default=200, show_default=True, help="distinct users"
)
@click.option(
    "--items", type=click.IntRange(1), default=50, show_default=True, help="distinct items"
)
@click.option(
    "--source",
    "name",
    default=None,
    help="a stable producer name: the workload is the same for the same options, numbered the "
    "same way, so running it again with the same name (after a crash at any point, or "
    "twice) applies every event once",
)
@json_option
@click.pass_obj
def p_load(
    obj: dict[str, int],
    redis_url: str | None,
    namespace: str | None,
    n: int,
    seed: int,
    rate: float,
    users: int,
    items: int,
    name: str | None,
    as_json: bool,
) -> None:
    """A seeded mixed workload reaching every order outcome."""
    if name is not None:
        try:
            source_of(name)
        except ValueError as exc:
            raise UserError(str(exc), EXIT_USAGE) from None
    c = ctx_of(redis_url, namespace)
    events = mixed(n, seed=seed, users=users, items=items)
    with client_errors(c), bar("publishing", n) as advance:
        # Named: each shard numbers its events 1, 2, ... in workload order, as a re-run does;
        # streamed (never held), in chunks of about 1/20 s of events at a --rate.
        done = _client(c, obj["wait_replicas"]).publish_many(
            events, source=name, seqs="shard" if name else "position", progress=advance,
            rate=rate,
        )  # fmt: skip
    if as_json:
        emit_json({"published": done.count} | ({"source": done.source} if name else {}))
    else:
        click.echo(f"published {done.count} events" + (f" as source p:{name}" if name else ""))
