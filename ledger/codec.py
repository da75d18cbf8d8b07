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

from ledger.events import (
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


class TopupWire(Topup):
    source: Source
    seq: Seq


class AddItemWire(AddItem):
    source: Source
    seq: Seq


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


def encode(event: Event, source: str, seq: int) -> str:
    """The entry text for ``event`` from ``source`` with sequence number ``seq``.

    The event is already validated; the envelope fields go after the payload, so the text is
    the same byte for byte for the same event, source and seq.
    """
    # pydantic's JSON is compact, in field order, with non-ASCII as is: what
    # json.dumps(separators=(",", ":"), ensure_ascii=False) of model_dump() gives, at a third
    # of the cost; the envelope is appended to the object.
    body = event.model_dump_json(exclude={"source", "seq"})
    return f'{body[:-1]},"source":{_quoted(source)},"seq":{seq}}}'


@functools.lru_cache(maxsize=4096)
def _quoted(source: str) -> str:
    """A source as a JSON string (a process has a handful: its own id, its shards' names)."""
    return json.dumps(source, ensure_ascii=False)


def decode(raw: bytes | str) -> Wire:
    """Parse and validate one entry; raise ``DecodeError`` with a bounded reason."""
    try:
        return _WIRE_ADAPTER.validate_json(raw)
    except ValidationError as err:
        try:
            value = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise DecodeError("bad_json", f"not valid JSON: {exc}") from None
        if not isinstance(value, dict):
            raise DecodeError(
                "bad_json", f"expected a JSON object, got {type(value).__name__}"
            ) from None
        kinds = {e["type"] for e in err.errors(include_url=False)}
        if kinds & {"union_tag_invalid", "union_tag_not_found"}:
            raise DecodeError("unknown_type", describe_validation_error(err)) from None
        raise DecodeError("invalid_event", describe_validation_error(err)) from None


def encode_outcome(outcome: OrderOutcome) -> str:
    return outcome.model_dump_json()


def decode_outcome(raw: bytes | str) -> OrderOutcome:
    return OrderOutcome.model_validate_json(raw)
