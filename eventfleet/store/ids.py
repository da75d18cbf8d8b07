"""Stream entry ids: ``<ms>-<seq>`` compared as numbers, not text."""

from __future__ import annotations

MAX = "18446744073709551615-18446744073709551615"
"""The largest entry id: nothing can follow it (a stream there takes no generated id)."""


def after_range(entry_id: bytes | str) -> str | None:
    """The XRANGE start just after ``entry_id`` (``(<id>``), or None when it is ``MAX``:
    Redis refuses an exclusive start there, and no entry can follow it anyway."""
    t = text(entry_id)
    if t == MAX:
        return None
    return "-" if t == "0-0" else f"({t}"


def parse(entry_id: bytes | str) -> tuple[int, int]:
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


def after(a: bytes | str, b: bytes | str) -> bool:
    """True when id ``a`` comes after id ``b``."""
    return parse(a) > parse(b)


def millis(entry_id: bytes | str) -> int:
    return parse(entry_id)[0]


def text(value: object) -> str:
    """A Redis reply value as text (replies are bytes; tests and scripts may give str)."""
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode()
    return str(value)
