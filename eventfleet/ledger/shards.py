"""Shard naming and routing: which shard owns which key. Stable across processes and hosts."""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass
from typing import Literal

from eventfleet.ledger.events import AddItem, Charge, Event, Order, Reject, Release, Topup

Family = Literal["u", "i"]
_SHARD_RE = re.compile(r"^([ui])(\d+)$")


DEFAULT_WINDOW_MS = 7 * 24 * 3600 * 1000
"""The dedup window when a namespace does not set one: seven days of entry-id time."""


@dataclass(frozen=True, slots=True)
class ShardCounts:
    """What every fold of a namespace must agree on, fixed at ``init``: the shard counts, the
    dedup window (ms of entry-id time; see ``eventfleet.ledger.dedup``) and what names an order.

    ``orders_per_user``: an order is (user, order id), so two users' orders never collide
    (namespaces made by ``init`` since this existed). False for a namespace made before: its
    user shards decide each order id once per shard, as they always did, so its log folds as
    it did (docs/DESIGN-DECISIONS.md, section 9)."""

    users: int
    items: int
    window_ms: int = DEFAULT_WINDOW_MS
    orders_per_user: bool = True

    def __post_init__(self) -> None:
        if not (1 <= self.users <= 4096 and 1 <= self.items <= 4096):
            raise ValueError("shard counts must be between 1 and 4096")
        if not 1 <= self.window_ms <= 10 * 365 * 24 * 3600 * 1000:
            raise ValueError("the dedup window must be between 1 ms and 10 years")

    def all_shards(self) -> list[str]:
        return [f"u{n}" for n in range(self.users)] + [f"i{n}" for n in range(self.items)]


def order_key(user_id: int, order_id: str, per_user: bool = True) -> str:
    """What a user shard remembers an order's decision under: ``<user id>/<order id>`` (an
    order id holds no ``/``), or the order id alone in a namespace made before orders were
    per user (``ShardCounts.orders_per_user``)."""
    return f"{user_id}/{order_id}" if per_user else order_id


def shard_index(key: str | int, count: int) -> int:
    """CRC32 of the id's UTF-8 text modulo the count (never Python's salted ``hash``)."""
    return zlib.crc32(str(key).encode("utf-8")) % count


def user_shard(user_id: int, counts: ShardCounts) -> str:
    return f"u{shard_index(user_id, counts.users)}"


def item_shard(item_id: str, counts: ShardCounts) -> str:
    return f"i{shard_index(item_id, counts.items)}"


def user_shards_since(user_id: int, then: int, now: int) -> list[str]:
    """The user shards that may hold ``user_id`` at some point between a time its family had
    ``then`` shards and one it has ``now`` (a multiple of ``then``: counts only grow, by
    multiples, docs/DESIGN-DECISIONS.md section 35): its shard under every count ``c`` with
    ``then | c | now``, the order of counts kept, each named once. An event routed with
    ``then`` shards is applied by one of them (its parent forwards it one split at a time).

    >>> user_shards_since(1, 2, 2)
    ['u1']
    >>> user_shards_since(1, 2, 8)
    ['u1', 'u3', 'u7']
    """
    if then <= 0 or now % then:
        return [f"u{shard_index(user_id, now)}"]
    out: list[str] = []
    ratio = now // then
    for k in range(1, ratio + 1):
        if ratio % k == 0:
            name = f"u{shard_index(user_id, then * k)}"
            if name not in out:
                out.append(name)
    return out


_USER_EVENTS = (Topup, Charge, Reject)
_ITEM_EVENTS = (AddItem, Order, Release)


def destination(event: Event, counts: ShardCounts) -> str:
    """The shard whose stream an event belongs on."""
    if isinstance(event, _USER_EVENTS):
        return user_shard(event.user_id, counts)
    if isinstance(event, _ITEM_EVENTS):
        return item_shard(event.item_id, counts)
    raise TypeError(f"not an event: {event!r}")  # pragma: no cover - the union is closed


def parse_shard(name: str) -> tuple[Family, int]:
    m = _SHARD_RE.match(name)
    if not m:
        raise ValueError(f"not a shard name: {name!r}")
    fam: Family = "u" if m.group(1) == "u" else "i"
    return fam, int(m.group(2))


def family(name: str) -> Family:
    return parse_shard(name)[0]
