"""Bundles: several events in one stream entry, as a JSON array of event objects.

Most of what an entry costs (its ``XADD``, its delivery through the consumer group, its ack,
the move out of the inbox, the reply parsing in the worker) does not depend on its size, so
producers and workers write the events they send to one shard together as one entry:
``[{...},{...},...]``. A single event is written as its object alone
(docs/DESIGN-DECISIONS.md, section 24).

An entry is split into its events (``split``) and each is folded by ``eventfleet.ledger.rules.step``
on its own, exactly as if it were an entry of its own with the same entry id: decoding,
forgery checks, dedup by (source, seq), dead letters. One bad element is dead-lettered
alone; its neighbours apply. The split depends on the entry's text only, so every fold of
the same log splits it the same way.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Annotated, Final, TypeVar

from pydantic import Field, TypeAdapter

from eventfleet.ledger.codec import MAX_ENTRY_BYTES, Wire

AnyText = TypeVar("AnyText", bytes, str)

MAX_EVENTS: Final = 100
"""Most events ``pack`` puts in one bundle."""
MAX_PACK_CHARS: Final = 48 * 1024
"""Longest bundle text ``pack`` writes (events are a few hundred characters each)."""
MAX_SPLIT_EVENTS: Final = 1000
"""Most elements ``split`` hands out; an entry with more is not split (it is dead-lettered
whole as the one event it then is)."""
MAX_SPLIT_BYTES: Final = 1024 * 1024
"""Longest entry ``split`` looks into; a longer one is dead-lettered whole (``too_large``)."""

# An array of flat objects (no braces or brackets anywhere inside them, not even in strings:
# every string of a valid event matches a restricted pattern). Each match of _OBJECT is then
# one element exactly where a JSON parser sees one, and is judged alone by ``step``.
_OBJ = r"\{[^{}\[\]]*\}"
_WHOLE_B = re.compile(rf"\s*\[\s*{_OBJ}(?:\s*,\s*{_OBJ})*\s*\]\s*".encode())
_WHOLE_S = re.compile(rf"\s*\[\s*{_OBJ}(?:\s*,\s*{_OBJ})*\s*\]\s*")
_OBJECT_B = re.compile(_OBJ.encode())
_OBJECT_S = re.compile(_OBJ)


def is_bundle(raw: bytes | str) -> bool:
    """Whether an entry's text is an array (its first character other than white space)."""
    head = raw[:64].lstrip()
    return head[:1] in (b"[", "[")


def split(raw: AnyText) -> Sequence[AnyText]:
    """The event texts an entry holds: the entry itself, or a bundle's elements.

    Never raises. A bundle of flat objects is cut at its objects; any other array at its
    top-level commas (``_parsed``); the parts are the writer's own bytes. What is not an
    array, has an empty element, is too long or has too many elements comes back whole, and
    ``step`` dead-letters it as one entry.
    """
    if not is_bundle(raw) or len(raw) > MAX_SPLIT_BYTES:
        return (raw,)
    whole, obj = (_WHOLE_B, _OBJECT_B) if isinstance(raw, bytes) else (_WHOLE_S, _OBJECT_S)
    if whole.fullmatch(raw):
        found: list[AnyText] = obj.findall(raw)
        return found if len(found) <= MAX_SPLIT_EVENTS else (raw,)
    return _parsed(raw)


def _parsed(raw: AnyText) -> Sequence[AnyText]:
    """The slow path, for arrays whose elements nest or quote braces: cut the array at its
    top-level commas (strings and nesting followed without recursion), so one element that
    nests too deep, or is not JSON at all, is judged alone and its neighbours still apply.
    What is not an array from its first ``[`` to its last ``]`` stays whole."""
    text = raw.strip()
    if not text or text[-1:] not in (b"]", "]"):
        return (raw,)
    marks = _MARKS_B if isinstance(text, bytes) else _MARKS_S
    quote, backslash = (b'"', b"\\") if isinstance(text, bytes) else ('"', "\\")
    depth, in_string, escaped = 0, False, -1
    cuts: list[int] = []
    for m in marks.finditer(text):
        at, ch = m.start(), m.group()
        if in_string:
            if ch == backslash:
                if at != escaped:
                    escaped = at + 1  # the next character is escaped
            elif ch == quote and at != escaped:
                in_string = False
            continue
        if ch == quote:
            in_string = True
        elif ch in _OPEN:
            depth += 1
        elif ch in _CLOSE:
            depth -= 1
            if depth == 0 and at != len(text) - 1:
                return (raw,)  # something after the array's end
        elif ch in _COMMA and depth == 1:
            cuts.append(at)
        if depth < 0:
            return (raw,)
    if depth != 0 or in_string or len(cuts) >= MAX_SPLIT_EVENTS:
        return (raw,)
    bounds = [0, *cuts, len(text) - 1]
    parts = [text[bounds[i] + 1 : bounds[i + 1]].strip() for i in range(len(bounds) - 1)]
    return (raw,) if any(not p for p in parts) else parts


_MARKS_B = re.compile(rb'[\[\]{}",\\]')
_MARKS_S = re.compile(r'[\[\]{}",\\]')
_OPEN = (b"[", b"{", "[", "{")
_CLOSE = (b"]", b"}", "]", "}")
_COMMA = (b",", ",")


_VALIDATE_LIST: Final = TypeAdapter(
    list[Annotated[Wire, Field(discriminator="type")]]
).validator.validate_json


def decode_bundle(raw: bytes | str) -> list[Wire] | None:
    """Every event of a bundle in one validation, or None when that cannot stand for the
    event-by-event path: an element fails, the bundle is empty or has too many, or it is
    longer than one entry may be (so no element can be over the per-event limit). Where it
    answers, the events are what ``split`` and ``decode`` per element give."""
    if len(raw) > MAX_ENTRY_BYTES:
        return None
    try:
        wires: list[Wire] = _VALIDATE_LIST(raw)
    except Exception:
        return None
    return wires if 1 <= len(wires) <= MAX_SPLIT_EVENTS else None


def read_count(events: int, per_entry: int) -> int:
    """Entries to read for about ``events`` events, where entries held ``per_entry`` each."""
    return max(1, events // per_entry)


def events_per_entry(events: int, entries: int) -> int:
    """Events per entry of a read, rounded up: the ``per_entry`` of the next ``read_count``."""
    return max(1, -(-events // entries))


def pack(texts: Sequence[str]) -> list[str]:
    """Entry texts for ``texts`` (event objects, in order): bundles of at most
    ``MAX_EVENTS`` events and ``MAX_PACK_CHARS`` characters; a lone event stays as it is."""
    if len(texts) <= 1:
        return list(texts)
    out: list[str] = []
    cur: list[str] = []
    size = 2
    for t in texts:
        if cur and (len(cur) >= MAX_EVENTS or size + len(t) + 1 > MAX_PACK_CHARS):
            out.append(_joined(cur))
            cur, size = [], 2
        cur.append(t)
        size += len(t) + 1
    out.append(_joined(cur))
    return out


def _joined(texts: list[str]) -> str:
    return texts[0] if len(texts) == 1 else f"[{','.join(texts)}]"
