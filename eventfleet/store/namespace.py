"""Creating a namespace (``eventfleet init``) and reading its fixed parameters: the shard
counts, the dedup window (a namespace made before the window existed has the default) and
what names an order (``order_ids``: ``per_user``; a namespace made before it has order ids per
user shard, ``eventfleet.ledger.shards.ShardCounts.orders_per_user``)."""

from __future__ import annotations

from typing import Any

import redis
from redis import exceptions as rx

from eventfleet.ledger.shards import DEFAULT_WINDOW_MS, ShardCounts
from eventfleet.store.keys import GROUP, INBOX_HEAD, Keys
from eventfleet.store.producers import Bounds, moved_names, registered
from eventfleet.store.scripts import create_inbox

FORMAT_VERSION = "1"
ORDERS_PER_USER = "per_user"
"""``order_ids`` in meta: an order is (user, order id). Absent in a namespace made before."""


class NamespaceError(Exception):
    """The namespace is missing or does not match what was asked for."""


class NamespaceMissing(NamespaceError):
    """No meta hash: ``eventfleet init`` has not run (yet) for this namespace."""


class NamespaceMismatch(NamespaceError):
    """The namespace exists with other shard counts or another dedup window than asked for."""


def init_namespace(
    r: redis.Redis, keys: Keys, counts: ShardCounts, bounds: Bounds | None = None
) -> bool:
    """Create meta, every shard stream and its group, and every shard's inboxes (the shared
    one, the operators' and every registered producer's: ``eventfleet.store.producers``).
    Returns True when it created meta. ``bounds`` (a producer's own inbox) is fixed in meta
    the first time it is given.

    Idempotent (on a namespace made by an older version it adds the inboxes); refuses to
    change the counts of an existing namespace. The streams, groups and inboxes come first
    and the meta hash last (``item_shards`` last of all), so a worker that finds a complete
    meta hash finds every group and inbox too.
    """
    if r.exists(keys.meta):
        _same_counts(read_counts(r, keys), counts, keys)
    create_shards(r, keys, counts.all_shards())
    created = bool(r.hsetnx(keys.meta, "user_shards", counts.users))
    if created:
        r.hset(keys.meta, "version", FORMAT_VERSION)
        r.hset(keys.meta, "dedup_window_ms", counts.window_ms)
        if counts.orders_per_user:
            r.hset(keys.meta, "order_ids", ORDERS_PER_USER)
        r.hset(keys.meta, "item_shards", counts.items)
    if bounds is not None:
        r.hsetnx(keys.meta, "producer_backlog", bounds.events)
        r.hsetnx(keys.meta, "producer_backlog_bytes", bounds.bytes)
    _same_counts(read_counts(r, keys), counts, keys)  # another init may have won the race
    return created


def create_shards(r: redis.Redis, keys: Keys, shards: list[str]) -> None:
    """Create each shard's stream and group, and its inboxes (the shared one, the operators'
    and every registered producer's); what exists is left as it is."""
    names = registered(r, keys)
    for shard in shards:
        try:
            r.xgroup_create(keys.events(shard), GROUP, id="0", mkstream=True)
        except rx.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        create_inbox(r, inbox=keys.inbox(shard), head=INBOX_HEAD)
        for name in moved_names(names):
            create_inbox(r, inbox=keys.inbox(shard, name), head=INBOX_HEAD)


def _same_counts(existing: ShardCounts, counts: ShardCounts, keys: Keys) -> None:
    if existing.window_ms != counts.window_ms:
        raise NamespaceMismatch(
            f"namespace {keys.ns!r} already has a dedup window of {existing.window_ms / 1000:g} s;"
            f" it cannot be changed to {counts.window_ms / 1000:g} s (fixed at init, since every"
            " fold of the log must use the same window; use a new namespace)"
        )
    if (existing.users, existing.items) != (counts.users, counts.items):
        raise NamespaceMismatch(
            f"namespace {keys.ns!r} already has {existing.users} user and {existing.items} item "
            f"shards; it cannot be changed to {counts.users} and {counts.items} "
            "(shard counts are fixed at init; use a new namespace)"
        )


def read_counts(r: redis.Redis, keys: Keys) -> ShardCounts:
    return counts_of(r.hgetall(keys.meta), keys)


def counts_of(meta: Any, keys: Keys) -> ShardCounts:
    """The namespace's fixed parameters from its meta hash (``HGETALL``'s reply)."""
    if b"item_shards" not in meta:  # none yet, or an init between its two writes
        raise NamespaceMissing(
            f"namespace {keys.ns!r} is not initialised on this Redis: run `eventfleet init` first"
        )
    try:
        version = meta.get(b"version", b"1").decode()
        if version != FORMAT_VERSION:
            raise NamespaceError(f"namespace {keys.ns!r} has format {version}; this build reads 1")
        window = meta.get(b"dedup_window_ms")
        scope = meta.get(b"order_ids")
        if scope is not None and scope.decode() != ORDERS_PER_USER:
            raise ValueError(f"order_ids is {scope.decode()!r}")
        return ShardCounts(
            int(meta[b"user_shards"]),
            int(meta[b"item_shards"]),
            int(window) if window is not None else DEFAULT_WINDOW_MS,
            orders_per_user=scope is not None,
        )
    except (KeyError, ValueError) as exc:
        raise NamespaceError(f"namespace {keys.ns!r} has a damaged meta hash: {exc}") from None


def read_init_counts(r: redis.Redis, keys: Keys) -> ShardCounts:
    return init_counts_of(r.hgetall(keys.meta), keys)


def init_counts_of(meta: Any, keys: Keys) -> ShardCounts:
    """``counts_of`` with the counts the namespace had at ``init`` (``init_user_shards``,
    ``init_item_shards``, recorded by the first online reshard; the current ones before it):
    what every fold of a shard starts with (a split shard routes with its own counts from its
    marker on, ``eventfleet.ledger.split``)."""
    counts = counts_of(meta, keys)
    users, items = meta.get(b"init_user_shards"), meta.get(b"init_item_shards")
    if users is None or items is None:
        return counts
    return ShardCounts(int(users), int(items), counts.window_ms, counts.orders_per_user)


def check_counts(
    actual: ShardCounts, users: int | None, items: int | None, init: ShardCounts | None = None
) -> None:
    """A worker configured for other counts refuses to start. In a namespace grown online
    (``init``: its counts at ``init``, when a reshard recorded them) a configured count on
    the way from the ``init`` count to the current one is accepted (a multiple of the first,
    dividing the second): the configuration written before a growth still names the
    namespace; any other count is a mistake."""

    def fits(configured: int | None, now: int, first: int | None) -> bool:
        if configured is None or configured == now:
            return True
        return first is not None and now % configured == 0 and configured % first == 0

    if not (
        fits(users, actual.users, init.users if init else None)
        and fits(items, actual.items, init.items if init else None)
    ):
        raise NamespaceMismatch(
            f"configured for {users} user / {items} item shards but the namespace has "
            f"{actual.users} / {actual.items}"
        )
