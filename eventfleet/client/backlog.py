"""A producer identity's bounded backlog, checked by the asyncio client as the sync client checks
it (``eventfleet.producer.client.Producer``): a write that would pass the bound of one of the
identity's own inboxes is refused whole with ``BacklogFull`` before anything is sent. The
check is cheap: the lengths ``RPUSHX`` replied are kept, and ``LLEN`` is asked, in one round
trip, only for the inboxes that look near the bound (workers only shrink them). A push that
passed the bound anyway (another client of the identity pushed at the same time) is told
after the fact: the move drops what lies past the bound (docs/SCALING.md, section 10).

>>> b = Backlog(None)
>>> b.after([("ns:{u0}:inbox:shop", ["e"])], [9])  # no identity: the shared inbox, unbounded
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from eventfleet.client.errors import BacklogFull
from eventfleet.store.keys import Keys
from eventfleet.store.producers import Bounds

FIELDS = ["producer_backlog", "producer_backlog_bytes"]


def _full(identity: str, inbox: str, waiting: int, bound: int) -> BacklogFull:
    shard = inbox.split(":")[1].strip("{}")
    return BacklogFull(
        f"producer {identity}: backlog full on shard {shard} ({waiting} of {bound} events not "
        "yet taken by a worker); nothing of this write was sent, retry later",
        retry_after=1.0,
    )


class Backlog:
    """The bound (read from the namespace's meta once) and each own inbox's last known length
    (its head included) for one client; without an identity, nothing is checked."""

    def __init__(self, identity: str | None, keys: Keys | None = None) -> None:
        self.identity = identity
        self.keys = keys
        self._bounds: Bounds | None = None
        self._lens: dict[str, int] = {}

    async def before(self, r: Any, pushes: Sequence[tuple[str, list[str]]]) -> None:
        """Raise ``BacklogFull`` if a push would pass its inbox's bound (nothing sent)."""
        if self.identity is None or self.keys is None:
            return
        if self._bounds is None:
            got = await r.hmget(self.keys.meta, FIELDS)
            self._bounds = Bounds.of(dict(zip([f.encode() for f in FIELDS], got, strict=True)))
        bound = self._bounds.events
        near = [k for k, texts in pushes if self._lens.get(k, 1) - 1 + len(texts) > bound]
        if near:
            pipe = r.pipeline(transaction=False)
            for k in near:
                pipe.llen(k)
            for k, n in zip(near, await pipe.execute(), strict=True):
                self._lens[k] = int(n)
        for k, texts in pushes:
            waiting = self._lens.get(k, 1) - 1
            if waiting + len(texts) > bound:
                raise _full(self.identity, k, waiting, bound)

    def after(self, pushes: Sequence[tuple[str, list[str]]], replies: Sequence[Any]) -> None:
        """Keep the lengths ``RPUSHX`` replied; raise ``BacklogFull`` for a push past the bound
        (the elements past it will be dropped by the move: send them again later)."""
        if self.identity is None or self._bounds is None:
            return
        bound = self._bounds.events
        for (k, texts), n in zip(pushes, replies, strict=False):
            self._lens[k] = int(n)
            if int(n) - 1 > bound:
                full = _full(self.identity, k, int(n) - 1 - len(texts), bound)
                full.args = (
                    f"producer {self.identity}: backlog full on shard {k.split(':')[1]}: "
                    f"{int(n) - 1 - bound} of the {len(texts)} events just sent are past the "
                    "bound and will be dropped; send the write again with the same source, "
                    "seqs or keys (what was kept is applied once)",
                )
                raise full


__all__ = ["Backlog"]
