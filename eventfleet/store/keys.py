"""Redis key names. Every key of one shard carries the ``{<shard>}`` hash tag (one slot)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

GROUP = "workers"
EVENT_FIELD = b"event"
VIA_FIELD = b"via"
VIA_INBOX = b"inbox"
TAIL_FIELD = b"tail"
BY_FIELD = b"by"
"""The producer whose own inbox a moved entry came from (``move_inbox.lua`` stamps it; absent
on entries of the shared inbox): the scope of its source, seqs and idempotency keys."""
FWD_FIELD = b"fwd"
"""The path of an entry a split shard forwarded to its child (``eventfleet.ledger.split``)."""
HEAD_FIELD = b"head"
"""The inbox chain of a moved entry (``eventfleet/store/lua/move_inbox.lua``): SHA-1 of its last
element,
and on the first entry of a move, of the inbox's head element before it."""
"""The mark of an entry the shard's owner moved from its inbox into the log (``via inbox``):
a producer's entry. Only worker scripts write shard streams, so no producer can leave it
off or set it on a shard's own events (docs/SECURITY.md)."""
INBOX_HEAD = b"head"
"""The first element of every inbox list, which is never moved: it keeps the list in
existence (producers may only ``RPUSHX``: append to a list that exists)."""


def entry_event(fields: dict[bytes, bytes]) -> tuple[bytes | None, bool, str]:
    """The event text of a stream entry, whether it came through an inbox, and the producer
    whose own inbox it came from ("" for the shared inbox and for shard events)."""
    by = fields.get(BY_FIELD)
    return fields.get(EVENT_FIELD), fields.get(VIA_FIELD) == VIA_INBOX, by.decode() if by else ""


def flat_entry_event(flat: list[Any]) -> tuple[bytes | None, bool, str]:
    """The same from an entry's flat field list (``[name, value, ...]``, as scripts return)."""
    n = len(flat)
    if n == 2 and flat[0] == EVENT_FIELD:  # what workers write
        return bytes(flat[1]), False, ""
    if n >= 4 and flat[0] == EVENT_FIELD and flat[2] == VIA_FIELD:  # a moved inbox entry
        if n >= 6 and flat[4] == BY_FIELD:  # from a producer's own inbox (move_inbox.lua)
            return bytes(flat[1]), flat[3] == VIA_INBOX, bytes(flat[5]).decode()
        return bytes(flat[1]), flat[3] == VIA_INBOX, ""  # (then its chain fields)
    raw: bytes | None = None
    via_inbox = False
    by = ""
    for i in range(0, n - 1, 2):
        name = flat[i]
        if name == EVENT_FIELD:
            raw = bytes(flat[i + 1])
        elif name == VIA_FIELD:
            via_inbox = flat[i + 1] == VIA_INBOX
        elif name == BY_FIELD:
            by = bytes(flat[i + 1]).decode()
    return raw, via_inbox, by


def flat_entry_fwd(flat: list[Any]) -> str:
    """The forwarding path of an entry from its flat field list ("" when it came directly)."""
    for i in range(2, len(flat) - 1, 2):
        if flat[i] == FWD_FIELD:
            return bytes(flat[i + 1]).decode()
    return ""


@dataclass(frozen=True, slots=True)
class Keys:
    ns: str

    @property
    def meta(self) -> str:
        return f"{self.ns}:meta"

    @property
    def workers(self) -> str:
        return f"{self.ns}:workers"

    @property
    def live(self) -> str:
        """Zset of liveness connections: ``<worker id> <client id> <node>`` -> registered (ms).
        The ``{NS:workers}`` tag puts it in the slot (and on the node) of ``workers``."""
        return f"{self.ns}:live{{{self.workers}}}"

    @property
    def gone(self) -> str:
        """Zset: workers whose liveness connection closed -> when their leases lapse anyway
        (ms); a new owner may break their leases before that. Same slot as ``workers``."""
        return f"{self.ns}:gone{{{self.workers}}}"

    def events(self, shard: str) -> str:
        return f"{self.ns}:{{{shard}}}:events"

    def inbox(self, shard: str, producer: str | None = None) -> str:
        """Where producers append (``RPUSHX``); the owner moves it into ``events``. Without
        ``producer`` the shared inbox (namespaces made before producer identities; tools
        run as admin), else that producer's own inbox of the shard, which only its ACL user
        may append to (``eventfleet.store.producers``)."""
        if producer is None:
            return f"{self.ns}:{{{shard}}}:inbox"
        return f"{self.ns}:{{{shard}}}:inbox:{producer}"

    @property
    def producers(self) -> str:
        """Hash: registered producer name -> its ACL user (``eventfleet producers``)."""
        return f"{self.ns}:producers"

    def dropped(self, shard: str) -> str:
        """Hash: producer name -> events of its own inbox of the shard the move dropped (past
        its bound, or not one flat JSON object of at most ``OWN_MAX_ELEMENT`` bytes)."""
        return f"{self.ns}:{{{shard}}}:dropped"

    def snapshot(self, shard: str) -> str:
        return f"{self.ns}:{{{shard}}}:snapshot"

    def lease(self, shard: str) -> str:
        return f"{self.ns}:{{{shard}}}:lease"

    def epoch(self, shard: str) -> str:
        return f"{self.ns}:{{{shard}}}:epoch"

    def outcomes(self, shard: str) -> str:
        return f"{self.ns}:{{{shard}}}:outcomes"

    def dlq(self, shard: str) -> str:
        return f"{self.ns}:{{{shard}}}:dlq"

    def written(self, shard: str) -> str:
        """Highest entry id whose effects some owner started writing (see
        ``eventfleet/store/lua/mark_written.lua``)."""
        return f"{self.ns}:{{{shard}}}:written"

    def model(self, shard: str) -> str:
        """Hash: the shard's read model, what applications read in O(1)
        (``eventfleet.worker.model``):
        ``b:<user>`` balance, ``i:<item>`` ``<remain> <price>``, ``o:<user>/<order id>``
        status, ``w:<source>`` the highest seq applied from it, ``_upto`` the entry id folded."""
        return f"{self.ns}:{{{shard}}}:model"

    def forwarded(self, shard: str) -> str:
        """Hash: per shard that forwards to this one (its parent at a split), the last of its
        entry ids forwarded here (``eventfleet/store/lua/forward_once.lua``)."""
        return f"{self.ns}:{{{shard}}}:forwarded"

    def poison(self, shard: str) -> str:
        """Entry ids dead-lettered for too many deliveries; replay and verify skip them."""
        return f"{self.ns}:{{{shard}}}:poison"

    def trim_base(self, shard: str) -> str:
        """A copy of the snapshot that covered the last trim of the shard's stream: ``verify``
        without an archive folds from it (the oldest state that covers what is gone)."""
        return f"{self.ns}:{{{shard}}}:trimbase"

    def quarantine(self, shard: str) -> str:
        """A copy of the last snapshot of the shard that did not decode, kept for inspection
        (``worker/takeover.py``); nothing reads it back."""
        return f"{self.ns}:{{{shard}}}:quarantine"

    def archived(self, shard: str) -> str:
        """Hash: per stream of the shard (``events``, ``outcomes``, ``dlq``), the last entry id
        ``eventfleet archive`` has safely on disk. Trimming never passes it."""
        return f"{self.ns}:{{{shard}}}:archived"
