"""The idempotent publishing client.

By default each producer is one fresh source, ``p:<uuid>``, and numbers its events per
destination shard from 1. A chunk whose reply was lost is sent again with the same numbers,
and the shard drops what it already applied: a retried publish takes effect once.

A *named* source (``name=``, ``p:<name>``) outlives the process: its sequence numbers come
from the caller (``publish(..., seqs=...)``, e.g. line numbers of a file), so publishing the
same events with the same numbers again, after a crash at any point, takes effect once.
Events that come one at a time (request handlers) can carry an idempotency key instead
(``publish_one(event, key=...)``): the receiving shard applies one event per key within the
namespace's dedup window.

Events go to the destination shard's inbox, a list, with ``RPUSHX`` (one command per shard
per chunk): the only write the producer's ACL user has, and one without options, so it
cannot trim, choose ids or create keys. The shard's owner moves them into its log with
server-assigned ids (``eventfleet/store/lua/fenced_read.lua``).

A client logged in as a producer identity's ACL user (``eventfleet producers add``) writes to
that producer's own inboxes; the shard's owner stamps the name on what it moves, and every
source, seq and key counts within it (``eventfleet.store.producers``): this client's
``source`` is then ``<name>/p:...``, as outcome records and the read model name it. Its own
inbox of a shard holds at most the namespace's bound: a write that would pass it is refused
whole with ``BacklogFull`` (a cheap check: the lengths ``RPUSHX`` replied, asked again with
``LLEN`` only near the bound).
"""

from __future__ import annotations

import dataclasses
import re
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import redis
import structlog

from eventfleet.ledger.codec import encode
from eventfleet.ledger.events import AddItem, ExternalEvent, Topup
from eventfleet.ledger.shards import ShardCounts, destination
from eventfleet.store import retry, wire
from eventfleet.store.connection import FatalRedisError, is_cluster
from eventfleet.store.keys import Keys
from eventfleet.store.namespace import NamespaceError, read_counts
from eventfleet.store.producers import Bounds, Lengths, identity_of
from eventfleet.store.replication import ShortOfReplicas, write_replicated

CHUNK = 1000
COUNTS_EVERY_S = 5.0
"""How often a producer re-reads the namespace's shard counts (they only grow, online:
docs/DESIGN-DECISIONS.md section 35), checked between chunks."""
_NAME = re.compile(r"^[A-Za-z0-9_.:-]{1,62}$")
log = structlog.get_logger("eventfleet.client")


def grown(old: ShardCounts, users: int, items: int) -> ShardCounts | None:
    """``old`` with ``users`` user and ``items`` item shards when the namespace's counts grew
    (each the one before or a multiple of it), None when they are the same. A shrink or a
    count that is not a multiple never comes from an online reshard (it refuses them):
    ``ValueError``, which a client re-reading the counts logs and ignores."""
    if (users, items) == (old.users, old.items):
        return None
    for fam, before, after in (("u", old.users, users), ("i", old.items, items)):
        if after < before or after % before:
            raise ValueError(f"{fam} shards cannot go from {before} to {after}")
    return dataclasses.replace(old, users=users, items=items)


def source_of(name: str) -> str:
    """The source a producer name stands for, ``p:<name>``; ValueError for a bad name."""
    if not _NAME.match(name):
        raise ValueError(
            f"source name {name!r}: 1 to 62 characters of A-Z a-z 0-9 _ . : - expected"
        )
    return f"p:{name}"


def check_key(key: str) -> str:
    """An idempotency key as the wire accepts it; ValueError otherwise."""
    if not _KEY.match(key):
        raise ValueError(f"idempotency key {key!r}: 1 to 64 characters of A-Z a-z 0-9 _ . : -")
    return key


_KEY = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")


class NotReplicated(FatalRedisError):
    """Fewer replicas than asked acknowledged a chunk, retried for ``retry_for_s``."""


class BacklogFull(Exception):
    """This producer's own inbox of a shard is at its bound (``eventfleet.store.producers``):
    the write was not sent (or, when another process of the same producer filled the inbox
    at the same moment, only its part within the bound was kept). ``retry_after`` seconds."""

    def __init__(self, message: str, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def username_of(r: Any) -> str | None:
    """The ACL user a client logs in as (its pool's, or a cluster client's node options)."""
    pool = getattr(r, "connection_pool", None)
    if pool is None:
        pool = getattr(r, "nodes_manager", None)
    kwargs = getattr(pool, "connection_kwargs", None) or {}
    user = kwargs.get("username")
    return str(user) if user else None


class InboxMissing(FatalRedisError):
    """A shard's inbox does not exist (``RPUSHX`` appended nothing): the namespace was made
    by an older version, or damaged. ``eventfleet init`` creates the inboxes."""


def grouped(stamped: Sequence[tuple[str, str]]) -> list[tuple[str, list[str]]]:
    """The stamped entries as one ``(inbox, texts)`` per inbox, in order within each: one
    inbox element per event (the shard's owner bundles them as it moves them into the log,
    ``eventfleet/store/lua/move_inbox.lua``, so an inbox's length is its count of events)."""
    by_key: dict[str, list[str]] = {}
    for key, text in stamped:
        by_key.setdefault(key, []).append(text)
    return list(by_key.items())


def pack_pushes(conn: Any, pushes: Sequence[tuple[str, list[str]]]) -> list[bytes]:
    """``RPUSHX <inbox> <text>...`` per inbox, packed as one write for ``conn``.

    The one place the producer's write is spelled for a raw connection (``eventfleet.store.wire``).
    """
    return wire.pack(conn, [("RPUSHX", k, *texts) for k, texts in pushes])


def queue_pushes(pipe: Any, pushes: Sequence[tuple[str, list[str]]]) -> None:
    """The same pushes queued on a pipeline (a cluster's, or one that ends with ``WAIT``)."""
    for key, texts in pushes:
        pipe.rpushx(key, *texts)


def check_pushed(pushes: Sequence[tuple[str, list[str]]], replies: Sequence[Any]) -> None:
    """``RPUSHX`` answers 0 for a missing list: nothing was appended there."""
    for (key, _texts), n in zip(pushes, replies, strict=False):
        if n == 0:
            raise InboxMissing(
                f"the shard inbox {key} does not exist: run `eventfleet init` "
                "(namespaces made before inboxes existed need it once)"
            )


def read_replies(conn: Any, n: int) -> list[Any]:
    """Read ``n`` replies in order; then raise the first error reply, as a pipeline does."""
    return wire.raise_first_error(wire.read(conn, n))


def push_all(r: redis.Redis, pushes: Sequence[tuple[str, list[str]]]) -> list[Any]:
    """The pushes sent as one packed write on one connection and read back in order: a
    pipeline without redis-py's per-command bookkeeping.

    As ``pipeline(transaction=False).execute()``: every reply is read, then the first error
    reply is raised; a connection that failed midway is dropped, never reused.
    """
    with wire.borrowed(r.connection_pool) as conn:
        wire.send(conn, pack_pushes(conn, pushes))
        return read_replies(conn, len(pushes))


def _chunks(it: Iterator[tuple[str, str]], size: int) -> Iterator[list[tuple[str, str]]]:
    buf: list[tuple[str, str]] = []
    for entry in it:
        buf.append(entry)
        if len(buf) >= size:
            yield buf
            buf = []
    if buf:
        yield buf


def _confirmed(out: Future[int], on_chunk: Callable[[int], None] | None) -> int:
    n = out.result()
    if on_chunk:
        on_chunk(n)
    return n


class Stamper:
    """A source and its sequence numbers per destination shard: what makes each event of a
    producer an entry the shards can deduplicate (shared by ``Producer`` and the asyncio
    client, which sends the stamped entries its own way)."""

    def __init__(
        self,
        keys: Keys,
        counts: ShardCounts,
        source: str | None = None,
        identity: str | None = None,
    ) -> None:
        self.keys = keys
        self.counts = counts
        self.identity = identity
        """The producer identity whose own inboxes this writes to (None: the shared inbox)."""
        self.wire_source = source or f"p:{uuid.uuid4().hex}"
        """The source written in each event; the shards count it within ``identity``."""
        self.source = f"{identity}/{self.wire_source}" if identity else self.wire_source
        """The source as the shards know it (outcome refs, the read model's watermark)."""
        self.seq: dict[str, int] = {}

    def stamp(
        self, event: ExternalEvent, seq: int | None = None, key: str | None = None
    ) -> tuple[str, str]:
        """The shard's inbox key and entry text for an event; advances the shard's seq.

        ``seq`` (a named source's own numbering) must grow per destination shard; without it
        the event gets the shard's next number. ``key`` is an idempotency key (checked by the
        caller, ``publish_one``).
        """
        shard = destination(event, self.counts)
        last = self.seq.get(shard, 0)
        if seq is None:
            seq = last + 1
        elif seq <= last:
            raise ValueError(f"seq {seq} after {last} for shard {shard}: seqs must grow")
        self.seq[shard] = seq
        return self.keys.inbox(shard, self.identity), encode(event, self.wire_source, seq, key)

    def regrow(self, counts: ShardCounts) -> None:
        """Route with ``counts`` from now on: each count the one before or a multiple of it
        (the namespace's counts grew, docs/DESIGN-DECISIONS.md section 35). Each new shard's
        counter starts at its parent's (the shard that held its keys before), so the first
        seq sent to it is above all this source sent its ancestors, as its dedup requires."""
        old = self.counts
        for fam, before, after in (("u", old.users, counts.users), ("i", old.items, counts.items)):
            if after < before or after % before:
                raise ValueError(f"{fam} shards cannot go from {before} to {after}")
            for n in range(before, after):
                last = self.seq.get(f"{fam}{n % before}")
                if last is not None:
                    self.seq[f"{fam}{n}"] = max(self.seq.get(f"{fam}{n}", 0), last)
        self.counts = counts


class Producer(Stamper):
    def __init__(
        self,
        r: redis.Redis,
        keys: Keys,
        counts: ShardCounts,
        *,
        source: str | None = None,
        name: str | None = None,
        retry_for_s: float = 60.0,
        wait_replicas: int = 0,
        wait_timeout_ms: int = 1000,
        counts_every_s: float = COUNTS_EVERY_S,
    ) -> None:
        if name is not None:
            source = source_of(name)
        super().__init__(keys, counts, source, identity_of(keys.ns, username_of(r)))
        self.r = r
        self._bounds: Bounds | None = None
        self._lens = Lengths()
        """The length (head included) each own inbox had at our last push or check."""
        self.retry_for_s = retry_for_s
        self.wait_replicas = wait_replicas
        self.wait_timeout_ms = wait_timeout_ms
        self.counts_every_s = counts_every_s
        self._counts_due = time.monotonic() + counts_every_s

    def learn_counts(self) -> None:
        """Re-read the shard counts when due and route with them once they grew
        (``regrow``). Called between chunks, never while one is out: a chunk sent again goes
        to the inboxes of its first attempt. A read that fails is tried at the next chunk."""
        now = time.monotonic()
        if now < self._counts_due:
            return
        self._counts_due = now + self.counts_every_s
        try:
            counts = read_counts(self.r, self.keys)
            to = grown(self.counts, counts.users, counts.items)
        except (redis.RedisError, NamespaceError):
            return
        except ValueError as exc:  # not a growth: routing on with the counts it has is safe
            log.warning("shard_counts_ignored", namespace=self.keys.ns, reason=str(exc))
            return
        if to is not None:
            self.regrow(to)

    def counts_due(self) -> bool:
        """Whether ``learn_counts`` would re-read the counts now (a clock check)."""
        return time.monotonic() >= self._counts_due

    def publish_one(self, event: ExternalEvent, *, key: str | None = None) -> str:
        """Publish one event now; returns the shard whose inbox took it. With ``key`` (a topup
        or add_item only) the receiving shard applies at most one event with that key within
        the dedup window, whichever producer sends it and however often."""
        if key is not None:
            if not isinstance(event, Topup | AddItem):
                raise ValueError(f"an idempotency key is for topup and add_item, not {event.type}")
            check_key(key)
        self.learn_counts()
        inbox, text = self.stamp(event, key=key)
        self.send([(inbox, text)])
        return inbox.split(":")[1].strip("{}")

    def send(self, stamped: Sequence[tuple[str, str]]) -> int:
        """Append stamped entries in one round trip, retrying the whole chunk on a lost reply;
        return how many were sent.

        With ``wait_replicas``, a chunk counts as sent only once that many replicas of every
        master it went to have it (WAIT); short of that it is sent again until ``retry_for_s``
        has passed, then ``NotReplicated`` is raised. A missing inbox raises ``InboxMissing``.
        """
        pushes = grouped(stamped)

        def queue(pipe: Any) -> None:
            queue_pushes(pipe, pushes)

        def go() -> list[Any]:
            if self.wait_replicas:
                return write_replicated(self.r, queue, self.wait_replicas, self.wait_timeout_ms)
            if not is_cluster(self.r):
                return push_all(self.r, pushes)
            pipe = self.r.pipeline(transaction=False)
            queue(pipe)
            return list(pipe.execute())

        deadline = time.monotonic() + self.retry_for_s
        if self.identity is not None:
            self._check_backlog(pushes, deadline)
        try:
            replies = retry.call(go, "publish", deadline=deadline)
        except ShortOfReplicas as exc:
            raise NotReplicated(f"{exc}, for {self.retry_for_s:g} s") from None
        check_pushed(pushes, replies)
        if self.identity is not None:
            self._check_kept(pushes, replies)
        return len(stamped)

    def _bound(self, deadline: float) -> Bounds:
        if self._bounds is None:
            fields = ["producer_backlog", "producer_backlog_bytes"]
            got: Any = retry.call(
                lambda: self.r.hmget(self.keys.meta, fields), "meta", deadline=deadline
            )
            self._bounds = Bounds.of(dict(zip([f.encode() for f in fields], got, strict=True)))
        return self._bounds

    def _check_backlog(self, pushes: Sequence[tuple[str, list[str]]], deadline: float) -> None:
        """Refuse the write whole when it would pass the bound of an own inbox
        (``eventfleet.store.producers.Lengths``: ``LLEN`` in one round trip, only for the
        inboxes that look near the bound)."""
        assert self.identity is not None
        bound = self._bound(deadline).events
        near = self._lens.near(pushes, bound)
        if near:

            def ask() -> list[Any]:
                pipe = self.r.pipeline(transaction=False)
                for k in near:
                    pipe.llen(k)
                return list(pipe.execute())

            self._lens.learn(near, retry.call(ask, "backlog", deadline=deadline))
        why = self._lens.refused(self.identity, pushes, bound)
        if why is not None:
            raise BacklogFull(why)

    def _check_kept(self, pushes: Sequence[tuple[str, list[str]]], replies: Sequence[Any]) -> None:
        """``RPUSHX`` replied each inbox's length: past the bound (another process of this
        producer pushed at the same time), the elements past it will be dropped by the move."""
        assert self.identity is not None
        why = self._lens.kept(self.identity, pushes, replies, self._bound(0.0).events)
        if why is not None:
            raise BacklogFull(why)

    def publish(
        self,
        events: Iterable[ExternalEvent],
        *,
        seqs: Iterable[int] | None = None,
        chunk: int = CHUNK,
        on_chunk: Callable[[int], None] | None = None,
    ) -> int:
        """Send ``events`` in chunks, in order; return how many were sent. ``seqs`` numbers
        them (one per event, growing per shard: a named source's numbering)."""
        if seqs is None:
            it: Iterator[tuple[str, str]] = map(self.stamp, events)
        else:
            it = (self.stamp(ev, n) for n, ev in zip(seqs, events, strict=True))
        if (
            wire.FAST_PACK
            and not self.wait_replicas
            and not is_cluster(self.r)
            and not self.identity
        ):
            return self._publish_overlapped(it, chunk, on_chunk)
        return self._publish_sequential(it, chunk, on_chunk)

    def _publish_sequential(
        self, it: Iterator[tuple[str, str]], chunk: int, on_chunk: Callable[[int], None] | None
    ) -> int:
        sent = 0
        buf: list[tuple[str, str]] = []
        for stamped in it:
            buf.append(stamped)
            if len(buf) >= chunk:
                self.send(buf)
                sent += len(buf)
                if on_chunk:
                    on_chunk(len(buf))
                buf = []
                self.learn_counts()
        if buf:
            self.send(buf)
            sent += len(buf)
            if on_chunk:
                on_chunk(len(buf))
        return sent

    def _publish_overlapped(
        self, it: Iterator[tuple[str, str]], chunk: int, on_chunk: Callable[[int], None] | None
    ) -> int:
        """Chunk n+1 is stamped while chunk n is sent and confirmed (``send``, with its
        retries) on a thread of its own, whose wait on the socket leaves the GIL free; n+1 is
        sent only once n is confirmed. Sending it earlier on the same connection, as a
        pipeline would, lets n+1 land while Redis refused part of n (out of memory for a
        moment): n's seqs, sent again, would then be dropped by the shards as repeats.
        """
        sent = 0
        with ThreadPoolExecutor(1, thread_name_prefix="eventfleet-send") as sender:
            out: Future[int] | None = None
            for stamped in _chunks(it, chunk):  # stamped here while the previous one is out
                if out is not None:
                    sent += _confirmed(out, on_chunk)
                out = sender.submit(self.send, stamped)
                self.learn_counts()  # before the next chunk is stamped
            if out is not None:
                sent += _confirmed(out, on_chunk)
        return sent
