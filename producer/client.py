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
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, NamedTuple

import redis
from redis import exceptions as rx

from ledger.codec import encode
from ledger.events import AddItem, ExternalEvent, Topup
from ledger.shards import ShardCounts, destination
from store import retry
from store.connection import TRANSIENT, FatalRedisError, is_cluster
from store.keys import EVENT_FIELD, Keys
from store.replication import ShortOfReplicas, write_replicated

CHUNK = 1000
_NAME = re.compile(r"^[A-Za-z0-9_.:-]{1,62}$")


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


def _hiredis_packer() -> Any:
    try:
        from hiredis import pack_command
    except ImportError:  # pragma: no cover - hiredis is a dependency (redis[hiredis])
        return None
    return pack_command


_PACK: Any = _hiredis_packer()
"""hiredis' RESP packer, which redis-py's packer calls too after per-argument checks."""


class NotReplicated(FatalRedisError):
    """Fewer replicas than asked acknowledged a chunk, retried for ``retry_for_s``."""


class Packed(NamedTuple):
    """A chunk's writes packed for one connection, and how to read their replies back."""

    data: list[bytes]
    replies: int
    """How many replies Redis sends (one per command)."""
    groups: list[list[int]]
    """Per stream, in order, the positions in the chunk of the entries sent to it."""


def pack_xadds(conn: Any, stamped: Sequence[tuple[str, str]]) -> Packed:
    """Per stream, ``MULTI``, an ``XADD <stream> * event <text>`` per entry in order, ``EXEC``:
    packed as one write for ``conn``.

    A stream's entries go in all or none. When Redis is full (maxmemory), a refused XADD among
    plain pipelined ones could be followed by an accepted one (memory freed in between); sent
    again, the refused entry would land after a higher seq of this source and the shard would
    drop it as a duplicate. In a transaction a refused XADD discards the whole group. The one
    place the producer's XADD is spelled for a raw connection; hiredis packs it directly,
    skipping redis-py's per-argument checks (which cost more than Redis' XADD).
    """
    groups: dict[str, list[int]] = {}
    for i, (stream, _text) in enumerate(stamped):
        groups.setdefault(stream, []).append(i)
    cmds: list[tuple[Any, ...]] = []
    for stream, idx in groups.items():
        cmds.append(("MULTI",))
        cmds.extend(("XADD", stream, "*", EVENT_FIELD, stamped[i][1]) for i in idx)
        cmds.append(("EXEC",))
    data = list(conn.pack_commands(cmds)) if _PACK is None else [b"".join([_PACK(c) for c in cmds])]
    return Packed(data, len(cmds), list(groups.values()))


def read_packed(conn: Any, packed: Packed, n: int) -> list[Any]:
    """Read the replies of ``packed`` (``n`` entries); the entry ids in the chunk's order.
    Every reply is read first; then the first error is raised (a refused XADD, a discarded
    transaction, or an entry's own error inside ``EXEC``'s reply)."""
    replies = read_replies(conn, packed.replies)
    out: list[Any] = [None] * n
    pos = 0
    for idx in packed.groups:
        pos += 1 + len(idx)  # MULTI's OK and a QUEUED per XADD
        added = replies[pos]
        pos += 1
        for i, eid in zip(idx, added, strict=True):
            if isinstance(eid, rx.ResponseError):
                raise eid
            out[i] = eid
    return out


def queue_xadds(pipe: Any, stamped: Sequence[tuple[str, str]]) -> None:
    """The same XADDs queued on a pipeline (a cluster's, or one that ends with ``WAIT``)."""
    for stream, text in stamped:
        pipe.xadd(stream, {EVENT_FIELD: text})


def read_replies(conn: Any, n: int) -> list[Any]:
    """Read ``n`` replies in order; then raise the first error reply, as a pipeline does."""
    replies: list[Any] = []
    error: rx.ResponseError | None = None
    for _ in range(n):
        try:
            replies.append(conn.read_response())
        except rx.ResponseError as exc:
            replies.append(exc)
            error = error or exc
    if error is not None:
        raise error
    return replies


def checkout(pool: Any) -> Any:
    """A connection from redis-py's pool. ``get_connection()`` takes no argument from
    redis-py 5.3 on (and warns about one); 5.0 to 5.2 require a command name, which they
    ignore for a plain pool."""
    if _NEEDS_COMMAND_NAME:
        return pool.get_connection("XADD")
    return pool.get_connection()


_NEEDS_COMMAND_NAME = redis.__version__.split(".")[:2] in (["5", "0"], ["5", "1"], ["5", "2"])


def xadd_all(r: redis.Redis, stamped: Sequence[tuple[str, str]]) -> list[Any]:
    """The XADDs of ``stamped`` sent as one packed write on one connection and read back in
    order: a pipeline without redis-py's per-command bookkeeping.

    As ``pipeline(transaction=False).execute()``: every reply is read, then the first error
    reply is raised; a connection that failed midway is dropped, never reused.
    """
    pool = r.connection_pool
    conn: Any = checkout(pool)  # redis-py's Connection methods are untyped
    try:
        packed = pack_xadds(conn, stamped)
        conn.send_packed_command(packed.data)
        return read_packed(conn, packed, len(stamped))
    except BaseException:
        conn.disconnect()
        raise
    finally:
        pool.release(conn)


class Producer:
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
    ) -> None:
        self.r = r
        self.keys = keys
        self.counts = counts
        if name is not None:
            source = source_of(name)
        self.source = source or f"p:{uuid.uuid4().hex}"
        self.seq: dict[str, int] = {}
        self.retry_for_s = retry_for_s
        self.wait_replicas = wait_replicas
        self.wait_timeout_ms = wait_timeout_ms

    def stamp(
        self, event: ExternalEvent, seq: int | None = None, key: str | None = None
    ) -> tuple[str, str]:
        """The stream key and entry text for an event; advances the shard's seq.

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
        return self.keys.events(shard), encode(event, self.source, seq, key)

    def publish_one(self, event: ExternalEvent, *, key: str | None = None) -> str:
        """Publish one event now; returns its entry id. With ``key`` (a topup or add_item
        only) the receiving shard applies at most one event with that key within the dedup
        window, whichever producer sends it and however often."""
        if key is not None:
            if not isinstance(event, Topup | AddItem):
                raise ValueError(f"an idempotency key is for topup and add_item, not {event.type}")
            check_key(key)
        return self.send([self.stamp(event, key=key)])[0]

    def send(self, stamped: Sequence[tuple[str, str]]) -> list[str]:
        """Write stamped entries in one pipeline, retrying the whole chunk on a lost reply.

        With ``wait_replicas``, a chunk counts as sent only once that many replicas of every
        master it went to have it (WAIT); short of that it is sent again until ``retry_for_s``
        has passed, then ``NotReplicated`` is raised.
        """

        def queue(pipe: Any) -> None:
            queue_xadds(pipe, stamped)

        def go() -> list[Any]:
            if self.wait_replicas:
                return write_replicated(self.r, queue, self.wait_replicas, self.wait_timeout_ms)
            if not is_cluster(self.r):
                return xadd_all(self.r, stamped)
            pipe = self.r.pipeline(transaction=False)
            queue(pipe)
            return list(pipe.execute())

        try:
            replies = retry.call(go, "publish", deadline=time.monotonic() + self.retry_for_s)
        except ShortOfReplicas as exc:
            raise NotReplicated(f"{exc}, for {self.retry_for_s:g} s") from None
        return [r.decode() if isinstance(r, bytes) else str(r) for r in replies[: len(stamped)]]

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
        if _PACK is not None and not self.wait_replicas and not is_cluster(self.r):
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
        if buf:
            self.send(buf)
            sent += len(buf)
            if on_chunk:
                on_chunk(len(buf))
        return sent

    def _publish_overlapped(
        self, it: Iterator[tuple[str, str]], chunk: int, on_chunk: Callable[[int], None] | None
    ) -> int:
        """Two chunks in flight on one connection: chunk n+1 is stamped and sent while Redis
        still works on chunk n, whose replies are read afterwards (Redis answers in order).

        On any failure the connection is dropped and every chunk not yet confirmed is sent
        again through ``send`` (with its retries), oldest first: its events keep their seq
        numbers, so what already landed is dropped by the shards as duplicates.
        """
        pool = self.r.connection_pool
        conn: Any = checkout(pool)
        unread: list[list[tuple[str, str]]] = []
        packs: list[Packed] = []
        sent = 0

        def confirm(stamped: list[tuple[str, str]]) -> None:
            nonlocal sent
            read_packed(conn, packs.pop(0), len(stamped))
            sent += len(stamped)
            if on_chunk:
                on_chunk(len(stamped))

        def flush(stamped: list[tuple[str, str]]) -> None:
            unread.append(stamped)  # from here on it is re-sent if anything fails
            packed = pack_xadds(conn, stamped)
            packs.append(packed)
            conn.send_packed_command(packed.data)
            if len(unread) > 1:
                confirm(unread[0])
                unread.pop(0)

        try:
            buf: list[tuple[str, str]] = []
            for entry in it:
                buf.append(entry)
                if len(buf) >= chunk:
                    flush(buf)
                    buf = []
            if buf:
                flush(buf)
            while unread:
                confirm(unread[0])
                unread.pop(0)
        except BaseException as exc:
            conn.disconnect()
            pool.release(conn)
            if not isinstance(exc, (*TRANSIENT, rx.ResponseError)):
                raise
            for stamped in unread:  # not confirmed: send again, oldest first
                self.send(stamped)
                sent += len(stamped)
                if on_chunk:
                    on_chunk(len(stamped))
            # the events not read from the iterator yet go the sequential way
            return sent + self._publish_sequential(it, chunk, on_chunk)
        pool.release(conn)
        return sent
