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
from eventfleet.store.producers import Bounds, Lengths

FIELDS = ["producer_backlog", "producer_backlog_bytes"]


class Backlog:
    """The bound (read from the namespace's meta once) and each own inbox's last known length
    (``eventfleet.store.producers.Lengths``) for one client; without an identity, nothing is
    checked."""

    def __init__(self, identity: str | None, keys: Keys | None = None) -> None:
        self.identity = identity
        self.keys = keys
        self._bounds: Bounds | None = None
        self._lens = Lengths()

    async def before(self, r: Any, pushes: Sequence[tuple[str, list[str]]]) -> None:
        """Raise ``BacklogFull`` if a push would pass its inbox's bound (nothing sent)."""
        if self.identity is None or self.keys is None:
            return
        if self._bounds is None:
            got = await r.hmget(self.keys.meta, FIELDS)
            self._bounds = Bounds.of(dict(zip([f.encode() for f in FIELDS], got, strict=True)))
        bound = self._bounds.events
        near = self._lens.near(pushes, bound)
        if near:
            pipe = r.pipeline(transaction=False)
            for k in near:
                pipe.llen(k)
            self._lens.learn(near, await pipe.execute())
        why = self._lens.refused(self.identity, pushes, bound)
        if why is not None:
            raise BacklogFull(why, retry_after=1.0)

    def after(self, pushes: Sequence[tuple[str, list[str]]], replies: Sequence[Any]) -> None:
        """Keep the lengths ``RPUSHX`` replied; raise ``BacklogFull`` for a push past the bound
        (the elements past it will be dropped by the move: send them again later)."""
        if self.identity is None or self._bounds is None:
            return
        why = self._lens.kept(self.identity, pushes, replies, self._bounds.events)
        if why is not None:
            raise BacklogFull(why, retry_after=1.0)


__all__ = ["Backlog"]
