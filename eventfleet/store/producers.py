"""Producer identities: names, their ACL users, their own inboxes and the bound on each.

A producer identity is a name registered in the namespace (``<ns>:producers``, name -> ACL
user) with an ACL user of its own, ``<ns>-producer-<name>``, which may append to nothing but
its own inboxes ``<ns>:{<shard>}:inbox:<name>``. The shard's owner moves every registered
inbox and stamps each entry with the name (``by``); the ledger scopes the entry's source,
seqs and idempotency key to it (``<name>/<source>``), so what one producer writes can never
match, pre-empt or be attributed to another's.

Reserved names: ``ops`` is the operators' identity (``dlq redrive`` writes its entries into
the logs as the admin user, stamped ``by ops``, so no producer credential can pre-claim a
redrive), ``legacy`` names the shared inbox of namespaces made before identities (its
sources stay unscoped, as they were).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from eventfleet.store.keys import Keys

NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")
OPS = "ops"
"""The operators' identity (``dlq redrive``), written into the logs by the admin user only."""
LEGACY = "legacy"
"""How the shared inbox (no identity) is named in listings and metrics."""
RESERVED = frozenset({OPS, LEGACY, "admin", "worker", "exporter", "reader", "default"})

DEFAULT_BACKLOG = 5000
"""Events a producer may have waiting in one shard's own inbox (docs/SCALING.md)."""
DEFAULT_BACKLOG_BYTES = 2 * 1024 * 1024
"""Bytes (Redis' sampled MEMORY USAGE of the list) one own inbox may hold."""
OWN_MAX_ELEMENT = 4096
"""The largest element moved from a producer's own inbox; a longer one (no valid event is
near it) or one that is not a flat JSON object is dropped and counted, never moved."""


class ProducerNameError(ValueError):
    """A producer name that cannot be one."""


def check_name(name: str, *, reserved_ok: bool = False) -> str:
    """``name`` if it can name a producer, else ProducerNameError with one line."""
    if not NAME.match(name):
        raise ProducerNameError(
            f"producer name {name!r}: 1 to 32 characters of a-z 0-9 _ -, "
            "starting with a letter or digit"
        )
    if name in RESERVED and not reserved_ok:
        raise ProducerNameError(f"producer name {name!r} is reserved")
    return name


def acl_user(ns: str, name: str) -> str:
    """The ACL user of producer ``name`` in namespace ``ns``."""
    return f"{ns}-producer-{name}"


def identity_of(ns: str, username: str | None) -> str | None:
    """The producer a connection's ACL user stands for in ``ns``, or None (the shared
    inbox: the legacy producer user, the admin, a Redis without ACL users)."""
    prefix = f"{ns}-producer-"
    if username and username.startswith(prefix):
        name = username[len(prefix) :]
        if NAME.match(name) and name not in RESERVED:
            return name
    return None


def key_patterns(ns: str, name: str) -> list[str]:
    """The ACL key patterns of producer ``name``: append to its own inboxes of every shard
    (``[ui]`` and 1 to 4 digits, as the shipped users), read meta, the read model and the
    user shards' outcomes (what ``produce order --wait`` and the client's reads need)."""
    digits = ["[0-9]" * k for k in range(1, 5)]
    pats = [f"%W~{ns}:{{[ui]{d}}}:inbox:{name}" for d in digits]
    pats += [f"%R~{ns}:{{[ui]{d}}}:inbox:{name}" for d in digits]
    pats += [f"%R~{ns}:{{u{d}}}:outcomes" for d in digits]
    pats += [f"%R~{ns}:{{[ui]{d}}}:model" for d in digits]
    pats.append(f"%R~{ns}:meta")
    return pats


COMMANDS = "-@all +ping +hello +client|setname +hgetall +hget +hmget +rpushx +llen +xread +wait"
"""A producer user's commands: the shipped producer's, and ``LLEN`` on its own inboxes (the
client's check of its backlog)."""


def acl_rules(ns: str, name: str, password: str) -> list[str]:
    """``ACL SETUSER <user>`` arguments for producer ``name`` with ``password``."""
    return [
        "reset",
        "on",
        f">{password}",
        "resetchannels",
        *key_patterns(ns, name),
        *COMMANDS.split(),
    ]


@dataclass(frozen=True, slots=True)
class Bounds:
    """The bound of one producer's own inbox of one shard (fixed in meta by ``init``)."""

    events: int = DEFAULT_BACKLOG
    bytes: int = DEFAULT_BACKLOG_BYTES

    @classmethod
    def of(cls, meta: Any) -> Bounds:
        """From meta's ``HGETALL`` reply (the defaults for a namespace made before)."""
        ev = meta.get(b"producer_backlog")
        by = meta.get(b"producer_backlog_bytes")
        return cls(
            int(ev) if ev else DEFAULT_BACKLOG,
            int(by) if by else DEFAULT_BACKLOG_BYTES,
        )


class Lengths:
    """One client's last known length (its head included) of each own inbox, and the checks
    the sync and the asyncio client make with it against the bound. Lengths known from the last
    push only grow until asked again (workers shrink them), so ``LLEN`` is needed only for the
    inboxes that look near the bound (``near``)."""

    def __init__(self) -> None:
        self.lens: dict[str, int] = {}

    def near(self, pushes: Sequence[tuple[str, list[str]]], bound: int) -> list[str]:
        """The inboxes whose push may pass ``bound``: ask their ``LLEN`` (``learn``)."""
        return [k for k, texts in pushes if self.lens.get(k, 1) - 1 + len(texts) > bound]

    def learn(self, inboxes: Sequence[str], lengths: Sequence[Any]) -> None:
        for k, n in zip(inboxes, lengths, strict=True):
            self.lens[k] = int(n)

    def refused(
        self, identity: str, pushes: Sequence[tuple[str, list[str]]], bound: int
    ) -> str | None:
        """Why the write must not be sent (a push would pass its inbox's bound), or None."""
        for k, texts in pushes:
            waiting = self.lens.get(k, 1) - 1
            if waiting + len(texts) > bound:
                return (
                    f"producer {identity}: backlog full on shard {k.split(':')[1].strip('{}')} "
                    f"({waiting} of {bound} events not yet taken by a worker); nothing of this "
                    "write was sent, retry later"
                )
        return None

    def kept(
        self,
        identity: str,
        pushes: Sequence[tuple[str, list[str]]],
        replies: Sequence[Any],
        bound: int,
    ) -> str | None:
        """Keep the lengths ``RPUSHX`` replied; what to say when a push went past the bound
        (another client of the identity pushed at the same time: the move drops the elements
        past it), or None."""
        for (k, texts), n in zip(pushes, replies, strict=False):
            self.lens[k] = int(n)
            if int(n) - 1 > bound:
                return (
                    f"producer {identity}: backlog full on shard {k.split(':')[1]}: "
                    f"{int(n) - 1 - bound} of the {len(texts)} events just sent are past the "
                    "bound and will be dropped; send the write again with the same source, "
                    "seqs or keys (what was kept is applied once)"
                )
        return None


def registered(r: Any, keys: Keys) -> list[str]:
    """The registered producer names, sorted."""
    raw: Any = r.hgetall(keys.producers)  # (HGETALL: every role that reads may send it)
    return sorted(n.decode() if isinstance(n, bytes) else str(n) for n in raw)


def waiting(replies: Any, n: int) -> int:
    """Events waiting in ``n`` inboxes from their ``LLEN`` replies (each head not counted)."""
    return sum(max(0, int(next(replies)) - 1) for _ in range(n))


def moved_names(names: list[str]) -> list[str]:
    """The own inboxes a shard's move takes, in order: every registered producer's."""
    return [n for n in names if n not in RESERVED]
