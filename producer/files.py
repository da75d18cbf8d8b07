"""Reading a JSON-lines file of external events, validated whole before anything is sent."""

from __future__ import annotations

import gc
from collections.abc import Iterable

from pydantic import ValidationError

from ledger.codec import describe_validation_error
from ledger.events import EXTERNAL_ADAPTER, ExternalEvent


class BadLine(ValueError):
    def __init__(self, lineno: int, message: str) -> None:
        super().__init__(f"line {lineno}: {message}")
        self.lineno = lineno


def parse_lines(
    lines: Iterable[str | bytes], numbers: list[int] | None = None
) -> list[ExternalEvent]:
    """Every non-blank line must be one external event; the first bad line raises.

    With ``numbers``, the line number (from 1) of each event is appended to it: a named
    source's sequence numbers, the same on every run over the same file."""
    # A big file becomes as many new objects, all kept in one growing list: the cyclic
    # garbage collector would walk them over and over (docs/PERFORMANCE.md), and they hold no
    # reference cycles. It is off while the file is read, back on after.
    collecting = gc.isenabled()
    gc.disable()
    try:
        return _parse(lines, numbers)
    finally:
        if collecting:
            gc.enable()


def _parse(lines: Iterable[str | bytes], numbers: list[int] | None) -> list[ExternalEvent]:
    events: list[ExternalEvent] = []
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            events.append(EXTERNAL_ADAPTER.validate_json(line))
            if numbers is not None:
                numbers.append(lineno)
        except ValidationError as err:
            kinds = {e["type"] for e in err.errors(include_url=False)}
            if "json_invalid" in kinds:
                raise BadLine(lineno, "not valid JSON") from None
            raise BadLine(lineno, describe_validation_error(err)) from None
    return events
