"""The Lua scripts Redis runs for eventfleet: one ``.lua`` file per script in this folder.

Each script touches the keys of one shard only (one hash tag, one cluster slot), or the
membership keys, which share one hash tag. Every KEYS and ARGV is documented at the top of
its file; the typed Python wrappers that send them (``eventfleet.worker.scripts``,
``eventfleet.store.scripts``,
``eventfleet.ops.archive.writer.raise_mark``) own their order.

Shared pieces are files too: ``prelude.lua`` (Redis' clock in ms, the entry-id comparison)
and ``move_inbox.lua`` (the inbox move of ``fenced_read`` and ``xadd_many``). ``source``
joins the pieces a script needs before its body, after its flags line (``#!lua
flags=...``), which Redis reads only as the first line. The text is joined, never edited:
limits travel as ARGV, so one Python constant holds each number.
"""

from __future__ import annotations

import functools
from importlib import resources

FLAGS = "#!lua"
"""How a script's flags line starts (``#!lua flags=allow-oom``)."""
PRELUDE = "prelude"
"""``now_ms()`` (Redis' clock in ms) and ``id_less(x, y)`` (entry id x below y)."""
MOVE_INBOX = "move_inbox"
"""``move_inbox(stream, inbox, limit, max_element, max_events, max_chars)``."""
PIECES = frozenset({PRELUDE, MOVE_INBOX})
"""Files that are no script of their own, only joined to scripts."""


@functools.cache
def read(name: str) -> str:
    """The text of ``<name>.lua`` in this folder."""
    return resources.files(__name__).joinpath(f"{name}.lua").read_text(encoding="utf-8")


def names() -> list[str]:
    """Every ``.lua`` file of the folder, by name (pieces included)."""
    files = resources.files(__name__).iterdir()
    return sorted(f.name.removesuffix(".lua") for f in files if f.name.endswith(".lua"))


@functools.cache
def source(name: str, *pieces: str) -> str:
    """Script ``name`` as Redis gets it: its flags line if it has one, then ``pieces`` in
    order (``PRELUDE``, ``MOVE_INBOX``), then the rest of its file."""
    if unknown := set(pieces) - PIECES:
        raise ValueError(f"not a shared piece: {sorted(unknown)}")
    body = read(name)
    flags = ""
    if body.startswith(FLAGS):
        first, _, body = body.partition("\n")
        flags = first + "\n"
    return flags + "".join(read(p) for p in pieces) + body
