"""One read of the read model, as both clients make it, across a growth of the shard counts
(docs/DESIGN-DECISIONS.md, sections 31 and 35): which hash and fields to fetch next
(``ask``), what the values fetched mean (``got``); the clients only fetch.

- A key is read on the shard the client's counts give it. A shard that split holds
  ``_routing`` (the counts it routes with since) and no longer the fields of the keys its
  children took: a read that finds ``_routing`` naming another shard for its key reads that
  shard instead (a client that has not learnt the grown counts yet, or before they are
  published: every child's model holds its seed's fields from the moment the seed exists).
- With a receipt ``(shard R, source, seq)``: on R itself the read waits for ``w:<source>``
  >= seq, as before; on a shard born of R by splits (the key moved while or after the event
  was sent to R: a stale router's receipt, R forwarded it) it waits for
  ``f:<R>:<source>`` >= seq, the mark of what reached that shard from R (in its seed, what
  R applied before the split; then what R forwarded), never for R's own mark, which rises
  when R forwards, before the child applies. The value is read with the mark, in one
  ``HMGET``, so it is never older than the receipt. A receipt of any other shard (another
  key's write) is waited for on its own shard, then the key is read, as before.

Each read asks for one more field (``_routing``) in the same ``HMGET``, no round trip more
(its cost per read was not measured); a key that moved costs one more ``HMGET`` per split
level the client has not learnt.
"""

from __future__ import annotations

from typing import Any

from eventfleet.client.results import OrderResult, Receipt
from eventfleet.ledger.shards import ShardCounts, item_shard, parse_shard, user_shard
from eventfleet.store.keys import Keys

ROUTING = "_routing"
"""The field of a split shard's model holding the counts it routes with (worker/model.py)."""
MAX_HOPS = 8
"""Shards followed through ``_routing`` in one read: one per split level the client has not
learnt (counts at most 4,096 per family, growing by multiples of at least 2)."""


def descends(shard: str, origin: str, count: int) -> bool:
    """Whether ``shard`` may be born of ``origin`` by splits, ``count`` being a count of their
    family that ``shard`` is routed with: some ``c`` dividing ``count``, above ``origin``'s
    index, sends ``shard``'s keys to ``origin`` (growth is by multiples, so the key of a
    receipt of ``origin`` that is now read on ``shard`` passed through it)."""
    fam, index = parse_shard(shard)
    ofam, oindex = parse_shard(origin)
    if fam != ofam or index == oindex:
        return False
    return any(count % c == 0 and index % c == oindex for c in range(oindex + 1, count))


class ModelRead:
    """One field of a key's model: drive it with ``ask`` (None once done) and ``got`` (the
    values of the fields asked, in order); ``applied`` tells whether the receipt, if any, was
    seen applied, and ``value`` is then the field's. ``again`` starts another round (the
    shard found is kept)."""

    def __init__(
        self,
        keys: Keys,
        key: int | str,
        shard: str,
        counts: ShardCounts,
        field: str,
        after: Receipt | OrderResult | None,
    ) -> None:
        self.keys = keys
        self.key = key
        self.shard = shard
        self.count = counts.users if shard[0] == "u" else counts.items
        self.field = field
        self.receipt = after if isinstance(after, Receipt) else None
        self.value: bytes | None = None
        self.applied = False
        self._hops = 0
        self._mark: str | None = None
        self._done = False
        self._elsewhere = False
        self.again()

    def again(self) -> None:
        self._done = self.applied = False
        self._elsewhere = False

    def ask(self) -> tuple[str, list[str]] | None:
        """The hash and fields to fetch next, or None when this round is done."""
        if self._done:
            return None
        r = self.receipt
        self._mark = None
        if r is not None:
            if r.shard == self.shard:
                self._mark = f"w:{r.source}"
            elif descends(self.shard, r.shard, self.count):
                self._mark = f"f:{r.shard}:{r.source}"
            elif not self._elsewhere:  # another shard's receipt: applied there first
                return self.keys.model(r.shard), [f"w:{r.source}"]
        wanted = [self.field, ROUTING] + ([self._mark] if self._mark else [])
        return self.keys.model(self.shard), wanted

    def got(self, values: list[Any]) -> None:
        r = self.receipt
        if r is not None and self._mark is None and not self._elsewhere:
            (seq,) = values
            if seq is None or int(seq) < r.seq:
                self._done = True  # not applied yet: the caller waits and asks again
            else:
                self._elsewhere = True
            return
        value, routing = values[0], values[1]
        moved = self._moved(routing)
        if moved is not None and self._hops < MAX_HOPS:
            self._hops += 1
            self.shard, self.count = moved
            return
        self._done = True
        if (
            r is not None
            and self._mark is not None
            and (values[2] is None or int(values[2]) < r.seq)
        ):
            return
        self.value = None if value is None else bytes(value)
        self.applied = True

    def _moved(self, routing: Any) -> tuple[str, int] | None:
        """The key's shard and its family's count under ``routing`` (a split shard's
        ``_routing``), when that is not the shard read; else None."""
        if routing is None:
            return None
        users, _, items = bytes(routing).decode().partition(",")
        counts = ShardCounts(int(users), int(items))
        if self.shard[0] == "u":
            home, count = user_shard(int(self.key), counts), counts.users
        else:
            home, count = item_shard(str(self.key), counts), counts.items
        return None if home == self.shard else (home, count)
