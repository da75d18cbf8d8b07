"""Reading a JSON-lines file of external events, validated whole before anything is sent."""

from __future__ import annotations

import gc
from collections.abc import Iterable

from pydantic import ValidationError

from eventfleet.ledger.codec import describe_validation_error
from eventfleet.ledger.events import EXTERNAL_ADAPTER, ExternalEvent

SHOWN_BAD_LINES = 20
"""How many bad lines a failed read keeps to report (all are counted)."""


class BadLine(ValueError):
    """The file has bad lines: every one is counted, the first ``SHOWN_BAD_LINES`` are kept
    (``lines``: line number and what is wrong), so a report names them all up to a bound."""

    def __init__(self, lines: list[tuple[int, str]], count: int) -> None:
        first_no, first = lines[0]
        super().__init__(f"line {first_no}: {first}")
        self.lineno = first_no
        self.lines = lines
        self.count = count


def parse_lines(
    lines: Iterable[str | bytes], numbers: list[int] | None = None
) -> list[ExternalEvent]:
    """Every non-blank line must be one external event; a file with bad lines raises
    ``BadLine`` once read to its end, naming them (the first ``SHOWN_BAD_LINES``) and counting
    them all.

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
    bad: list[tuple[int, str]] = []
    count = 0
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            events.append(EXTERNAL_ADAPTER.validate_json(line))
            if numbers is not None:
                numbers.append(lineno)
        except ValidationError as err:
            count += 1
            if len(bad) < SHOWN_BAD_LINES:
                kinds = {e["type"] for e in err.errors(include_url=False)}
                why = "not valid JSON" if "json_invalid" in kinds else None
                bad.append((lineno, why or describe_validation_error(err)))
    if bad:
        raise BadLine(bad, count)
    return events
