"""The wire format: one flat JSON object per stream entry, ``{"type", "source", "seq", ...}``.

Decoding is one pydantic ``validate_json`` call over a discriminated union of the wire
models, which are the event models plus the two envelope fields. A wire object *is* an
instance of its event class, so handlers take it as the plain event.
"""

from __future__ import annotations

import functools
import json
from typing import Annotated, Final

from pydantic import Field, StrictInt, TypeAdapter, ValidationError

from eventfleet.ledger.events import (
    MAX_INT,
    AddItem,
    Charge,
    Event,
    Order,
    OrderOutcome,
    Reject,
    Release,
    Topup,
)

Source = Annotated[
    str, Field(min_length=2, max_length=80, pattern=r"^(p:[A-Za-z0-9_.:-]{1,64}|[ui][0-9]{1,4})$")
]
Seq = Annotated[StrictInt, Field(ge=1, le=MAX_INT)]
IdemKey = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]
"""An idempotency key: names one topup or add_item; the receiving shard applies one event per
key within the dedup window (``eventfleet.ledger.dedup``)."""


class TopupWire(Topup):
    source: Source
    seq: Seq
    key: IdemKey | None = None


class AddItemWire(AddItem):
    source: Source
    seq: Seq
    key: IdemKey | None = None


class OrderWire(Order):
    source: Source
    seq: Seq


class ChargeWire(Charge):
    source: Source
    seq: Seq


class ReleaseWire(Release):
    source: Source
    seq: Seq


class RejectWire(Reject):
    source: Source
    seq: Seq


Wire = TopupWire | AddItemWire | OrderWire | ChargeWire | ReleaseWire | RejectWire
_WIRE_ADAPTER: Final[TypeAdapter[Wire]] = TypeAdapter(Annotated[Wire, Field(discriminator="type")])
_VALIDATE_JSON: Final = _WIRE_ADAPTER.validator.validate_json
"""pydantic-core's own entry point, without the Python-level wrapper of
``TypeAdapter.validate_json`` (argument checks, keyword defaults): docs/PERFORMANCE.md."""


MAX_ENTRY_BYTES = 64 * 1024
"""Longest entry text decoded (an event is a few hundred bytes); a longer one is dead-lettered
unread, and a dead letter keeps at most this much of any entry (``bounded_text``)."""
MAX_ERROR_CHARS = 500
"""Longest error text of a dead letter: a validation message can quote the whole input."""


class DecodeError(Exception):
    """An entry that cannot become an event. ``reason`` is a short, bounded label."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def describe_validation_error(err: ValidationError) -> str:
    """One readable line per problem: ``field: message``."""
    parts = []
    for e in err.errors(include_url=False):
        loc = ".".join(str(p) for p in e["loc"] if not isinstance(p, int))
        # drop the union tag pydantic puts first in a discriminated-union location
        loc = loc.split(".", 1)[1] if "." in loc and loc.split(".", 1)[0] in _TAGS else loc
        parts.append(f"{loc or 'event'}: {e['msg']}")
    return "; ".join(parts)


_TAGS: Final = frozenset({"topup", "add_item", "order", "charge", "release", "reject"})


def encode(event: Event, source: str, seq: int, key: str | None = None) -> str:
    """The entry text for ``event`` from ``source`` with sequence number ``seq``, and its
    idempotency ``key`` when given (topup and add_item only; validated by the caller).

    The event is already validated; the envelope fields go after the payload, so the text is
    the same byte for byte for the same event, source, seq and key.
    """
    # pydantic's JSON is compact, in field order, with non-ASCII as is: what
    # json.dumps(separators=(",", ":"), ensure_ascii=False) of model_dump() gives, for less
    # (docs/PERFORMANCE.md); the envelope is appended to the object.
    body = event.model_dump_json(exclude={"source", "seq", "key"})
    if key is None:
        return f'{body[:-1]},"source":{_quoted(source)},"seq":{seq}}}'
    return f'{body[:-1]},"source":{_quoted(source)},"seq":{seq},"key":{json.dumps(key)}}}'


# The saga's internal events, written without building a pydantic model (a model's
# validation and serialisation cost more than the rule that made it). Every field comes from an
# entry that was validated on decode or from the shard's state, which only validated entries
# fill: ids and item keys match ``Key``'s pattern (letters, digits, ``_.:-``), so they need no
# escaping, and numbers are ints. The text is byte for byte what ``encode`` gives for the same
# model (tests/test_codec_fast.py checks it for any valid fields).
def charge_text(
    order_id: str,
    user_id: int,
    item_id: str,
    qty: int,
    amount: int,
    ref: str | None,
    source: str,
    seq: int,
) -> str:
    return (
        f'{{"type":"charge","order_id":"{order_id}","user_id":{user_id},"item_id":"{item_id}",'
        f'"qty":{qty},"amount":{amount},"ref":{_ref(ref)},"source":{_quoted(source)},'
        f'"seq":{seq}}}'
    )


def _ref(ref: str | None) -> str:
    """A ref (``<source>/<seq>``: source characters, a slash, digits) as JSON."""
    return "null" if ref is None else f'"{ref}"'


def release_text(order_id: str, item_id: str, qty: int, source: str, seq: int) -> str:
    return (
        f'{{"type":"release","order_id":"{order_id}","item_id":"{item_id}","qty":{qty},'
        f'"source":{_quoted(source)},"seq":{seq}}}'
    )


def reject_text(
    order_id: str,
    user_id: int,
    item_id: str,
    qty: int,
    reason: str,
    amount: int | None,
    ref: str | None,
    source: str,
    seq: int,
) -> str:
    money = "null" if amount is None else amount
    return (
        f'{{"type":"reject","order_id":"{order_id}","user_id":{user_id},"item_id":"{item_id}",'
        f'"qty":{qty},"reason":"{reason}","amount":{money},"ref":{_ref(ref)},'
        f'"source":{_quoted(source)},"seq":{seq}}}'
    )


@functools.lru_cache(maxsize=4096)
def _quoted(source: str) -> str:
    """A source as a JSON string (a process has a handful: its own id, its shards' names)."""
    return json.dumps(source, ensure_ascii=False)


def decode(raw: bytes | str) -> Wire:
    """Parse and validate one entry; raise ``DecodeError`` with a bounded reason.

    Nothing else escapes, whatever ``raw`` holds: over-long text is refused unread, and the
    parser's own limits (nesting depth, number size, UTF-8) come back as ``bad_json``. No
    second parse with ``json`` (whose recursion limit is Python's) is ever made.
    """
    if len(raw) > MAX_ENTRY_BYTES:
        raise DecodeError("too_large", f"entry of {len(raw)} bytes (limit {MAX_ENTRY_BYTES})")
    try:
        wire: Wire = _VALIDATE_JSON(raw)
        return wire
    except ValidationError as err:
        raise _classify(err) from None
    except Exception as exc:
        raise DecodeError("bad_json", bounded(f"{type(exc).__name__}: {exc}")) from None


def _classify(err: ValidationError) -> DecodeError:
    """The dead-letter reason for a validation error, from pydantic's error types alone."""
    errors = err.errors(include_url=False)
    kinds = {e["type"] for e in errors}
    if "json_invalid" in kinds or "json_type" in kinds:
        return DecodeError("bad_json", bounded(f"not valid JSON: {errors[0]['msg']}"))
    if kinds & {"dict_type", "model_type", "model_attributes_type"} and len(errors) == 1:
        return DecodeError("bad_json", "expected a JSON object")
    if kinds & {"union_tag_invalid", "union_tag_not_found"}:
        return DecodeError("unknown_type", bounded(describe_validation_error(err)))
    return DecodeError("invalid_event", bounded(describe_validation_error(err)))


def bounded(text: str, limit: int = MAX_ERROR_CHARS) -> str:
    """``text`` cut to ``limit`` characters, saying so."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def bounded_text(raw: bytes | str) -> str:
    """An entry as text for a dead letter: invalid UTF-8 replaced, at most
    ``MAX_ENTRY_BYTES`` of it kept."""
    cut = raw[:MAX_ENTRY_BYTES]
    text = cut.decode("utf-8", "replace") if isinstance(cut, bytes) else cut
    return text.encode("utf-8", "replace").decode("utf-8")


def loads_object(raw: bytes | str | None) -> dict[str, object] | None:
    """A JSON object from an entry or a dead letter's text, or None: for tools that read
    what any writer may have put there. Never raises (too long, too deep, not JSON: None)."""
    if raw is None or len(raw) > MAX_ENTRY_BYTES:
        return None
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError, UnicodeDecodeError, TypeError):
        return None
    return doc if isinstance(doc, dict) else None


def encode_outcome(outcome: OrderOutcome) -> str:
    """``outcome.model_dump_json()`` without ``first`` and ``ref`` when they are None (older
    records lack them); ``outcome_text`` of its fields."""
    o = outcome
    return outcome_text(
        o.order_id, o.user_id, o.item_id, o.qty, o.amount, o.status, o.reason, o.first, o.ref
    )


def outcome_text(
    order_id: str,
    user_id: int,
    item_id: str,
    qty: int,
    amount: int | None,
    status: str,
    reason: str | None,
    first: str | None,
    ref: str | None,
) -> str:
    """An outcome record's JSON from its fields, without building the model: what
    ``encode_outcome`` gives for the ``OrderOutcome`` of the same fields (see ``charge_text``:
    the rules take every field from a validated event; the ids match ``Key``'s pattern, a ref
    is a source and a seq, the reason and status are literals, the numbers ints)."""
    money = "null" if amount is None else amount
    why = "null" if reason is None else f'"{reason}"'
    was = "" if first is None else f',"first":"{first}"'
    by = "" if ref is None else f',"ref":"{ref}"'
    return (
        f'{{"order_id":"{order_id}","user_id":{user_id},"item_id":"{item_id}",'
        f'"qty":{qty},"amount":{money},"status":"{status}","reason":{why}{was}{by}}}'
    )


def decode_outcome(raw: bytes | str) -> OrderOutcome:
    return OrderOutcome.model_validate_json(raw)
