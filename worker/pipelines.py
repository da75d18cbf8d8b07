"""One pipeline per master on Redis Cluster: a master that fails fails only its own shards.

redis-py's cluster pipeline sends every queued command in one go and raises when any node
cannot be reached, so a worker whose reads, renewals or effects spanned every master paused
as a whole while one master failed over. Here the commands are grouped by the master that
serves each item's slot (every key of a shard carries the shard's hash tag: one slot per
shard), each group goes in a plain pipeline on that master's own client, and each item gets
its replies back, or the error that failed its group. The other masters' items go through.

``PerMaster.plan`` reads the client's slot map and must run on the thread that owns the
cluster client; ``execute`` only does I/O on per-node clients (whose connection pools are
thread-safe), so a read-ahead thread may run it. ``run`` is both, plus one more try through
the cluster client's own pipeline for the items that failed: it follows MOVED and ASK (a slot
being moved) and refreshes the slot map after a connection error (a master that failed over).

``write_rounds`` writes a batch's effects so that a shard's entries are acked only once all
of its effects are written, when some of them go to another master (see its docstring).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, cast

import redis
from redis import exceptions as rx
from redis.cluster import RedisCluster, get_connection

from eventfleet.store import wire
from eventfleet.store.connection import TRANSIENT
from eventfleet.store.replication import Recorder

FAILS: tuple[type[BaseException], ...] = (*TRANSIENT, rx.AskError)
"""What fails an item: a connection error or timeout of its group, or a reply that says its
slot is elsewhere or unavailable (``MOVED`` and ``ASK``; ``TRYAGAIN``, ``CLUSTERDOWN`` and
out-of-memory are among ``TRANSIENT``)."""

_STILL_FAILING: tuple[type[BaseException], ...] = (*TRANSIENT, rx.RedisClusterException)

Queue = Callable[[Any, int], None]
"""``queue(pipe, i)`` queues item ``i``'s commands on ``pipe``."""
Result = list[Any] | BaseException
"""An item's replies (reply errors such as ``FENCED`` included, as values), or what failed it."""
Call = tuple[str, str, tuple[Any, ...], dict[str, Any]]
"""A recorded command: method, key, arguments (``eventfleet.store.replication.Recorder``)."""


Plan = list[tuple[Any, list[int]]]
"""Per master: its client (or the error that left the slot without one) and the items."""


def failed(result: object) -> bool:
    """Whether an item's result (or one reply) is a failure rather than replies."""
    return isinstance(result, FAILS)


class PerMaster:
    """Items keyed by one key each, sent in one pipeline per master of a Redis Cluster."""

    def __init__(self, r: redis.Redis) -> None:
        self.rc = cast(RedisCluster, r)

    def node_name(self, key: str) -> str:
        """The name of the master that serves ``key``'s slot now ('' if none does)."""
        try:
            node: Any = self.rc.get_node_from_key(key)  # type: ignore[no-untyped-call]
        except rx.SlotNotCoveredError:
            return ""
        return str(node.name)

    def plan(self, keys: Sequence[str]) -> Plan:
        """Group the items by the master of their key's slot, as the slot map says now."""
        groups: dict[str, tuple[Any, list[int]]] = {}
        for i, key in enumerate(keys):
            try:
                node: Any = self.rc.get_node_from_key(key)  # type: ignore[no-untyped-call]
                name = node.name
            except rx.SlotNotCoveredError as exc:  # a slot with no master for now
                groups.setdefault(f"!{key}", (exc, []))[1].append(i)
                continue
            group = groups.get(name)
            if group is None:
                group = groups[name] = (self.rc.get_redis_connection(node), [])
            group[1].append(i)
        return list(groups.values())

    @staticmethod
    def execute(plan: Plan, n: int, queue: Queue) -> list[Result]:
        """Send each group as a pipeline on its master's own connection, every group before
        reading any reply (the masters work at the same time, as in the cluster pipeline);
        per item, its result. I/O only: safe on another thread than the cluster client's."""
        out: list[Result] = [rx.ConnectionError("not sent")] * n
        sent: list[_Sent] = []
        try:
            for client, idx in plan:
                if isinstance(client, BaseException):
                    for i in idx:
                        out[i] = client
                    continue
                pipe = client.pipeline(transaction=False)
                group = _Sent(client, pipe.command_stack, _queue_all(pipe, idx, queue), idx)
                try:
                    group.send()
                except TRANSIENT as exc:  # this master is unreachable: only its items fail
                    group.release()
                    group.fail(out, exc)
                    continue
                sent.append(group)
            for group in sent:
                try:
                    _split(out, group.spans, group.read())
                except TRANSIENT as exc:
                    group.fail(out, exc)
        finally:
            for group in sent:
                group.release()
        return out

    def retry_failed(self, out: list[Result], queue: Queue) -> None:
        """Send the failed items once more through the cluster client's own pipeline, which
        follows redirections and refreshes the slot map (this thread owns the client)."""
        again = [i for i, res in enumerate(out) if failed(res)]
        if not again:
            return
        pipe: Any = self.rc.pipeline(transaction=False)  # type: ignore[no-untyped-call]
        spans = _queue_all(pipe, again, queue)
        try:
            replies = list(pipe.execute(raise_on_error=False))
        except _STILL_FAILING:
            return  # still failing: the items keep their first error
        _split(out, spans, replies)

    def run(self, keys: Sequence[str], queue: Queue) -> list[Result]:
        """``plan``, ``execute`` and ``retry_failed``: on the cluster client's thread."""
        out = self.execute(self.plan(keys), len(keys), queue)
        self.retry_failed(out, queue)
        return out

    def replies(self, keys: Sequence[str], queue: Queue, *, all_failed: bool = True) -> list[Any]:
        """``run`` for items of one command each: per item its reply, None if it failed.
        Raises any error reply other than a failure, and with ``all_failed`` the first
        failure when every item failed."""
        out = self.run(keys, queue)
        error = first_error(out)
        if error is not None and all_failed:
            raise error
        for r in out:
            if isinstance(r, list):
                _raise_reply_error(r)
        return [r[0] if isinstance(r, list) else None for r in out]


class _Sent:
    """One master's pipeline, sent on a connection of its own and read back later (the way
    redis-py's pipeline does both at once)."""

    def __init__(
        self, client: Any, stack: list[Any], spans: list[tuple[int, int, int]], idx: list[int]
    ) -> None:
        self.client = client
        self.stack = stack
        self.spans = spans
        self.idx = idx
        self.conn: Any = None
        self.clean = False

    def send(self) -> None:
        # redis.cluster.get_connection: redis-py's own way to a node client's connection
        self.conn = get_connection(self.client, "PIPELINE")
        wire.send(self.conn, wire.pack(self.conn, [a for a, _ in self.stack], checked=True))

    def read(self) -> list[Any]:
        replies = wire.read(
            self.conn, len(self.stack), wire.parsed_by(self.client, self.conn, self.stack)
        )
        self.clean = True
        return replies

    def fail(self, out: list[Result], exc: BaseException) -> None:
        for i in self.idx:
            out[i] = exc

    def release(self) -> None:
        if self.conn is None:
            return
        wire.release(self.client.connection_pool, self.conn, in_step=self.clean)
        self.conn = None


def _raise_reply_error(replies: list[Any]) -> None:
    """An error reply other than a failure (a script error, ``NOGROUP``) raises, as a
    pipeline executed with ``raise_on_error`` would."""
    for reply in replies:
        if isinstance(reply, rx.ResponseError):
            raise reply


def _queue_all(pipe: Any, idx: list[int], queue: Queue) -> list[tuple[int, int, int]]:
    """Queue the items ``idx`` on ``pipe``; per item, where its commands are in the pipeline."""
    spans = []
    for i in idx:
        start = len(pipe)
        queue(pipe, i)
        spans.append((i, start, len(pipe)))
    return spans


def _split(out: list[Result], spans: list[tuple[int, int, int]], replies: list[Any]) -> None:
    for i, start, end in spans:
        got = replies[start:end]
        bad = next((r for r in got if failed(r)), None)
        out[i] = bad if bad is not None else got


def first_error(results: Sequence[Result]) -> BaseException | None:
    """The first failure among ``results`` if every one failed, else None."""
    if results and all(isinstance(res, BaseException) for res in results):
        return transient(cast(BaseException, results[0]))
    return None


def transient(exc: BaseException) -> BaseException:
    """A failure as an error that ``eventfleet.store.retry`` retries (a redirection:
    ``TRYAGAIN``)."""
    if isinstance(exc, TRANSIENT):
        return exc
    return rx.TryAgainError(f"the slot moved: {str(exc)[:200]}")


def _replay(calls: list[Call]) -> Queue:
    def queue(pipe: Any, i: int) -> None:
        method, _key, args, kwargs = calls[i]
        getattr(pipe, method)(*args, **kwargs)

    return queue


WRITTEN, LOST, UNACKED = "written", "lost", "unacked"


def write_rounds(
    masters: PerMaster, homes: Sequence[str], queue: Queue
) -> list[tuple[str, BaseException | None]]:
    """Write each shard's effects (what ``queue(pipe, i)`` queues for shard ``i``, the ack
    last; its own keys share ``homes[i]``'s slot) in pipelines per master. Per shard:
    ``WRITTEN``; ``LOST`` (some effect may not be written: its state is ahead of Redis); or
    ``UNACKED`` (every effect is written, the ack is not); and the error.

    A shard's effects on its own master (the written-mark first, outcomes, dead letters,
    events emitted to shards on the same master, then the ack) keep their order on one
    connection. Events emitted to a shard on another master cannot ride that connection, so
    the writes go in three rounds, each one pipeline per master: each shard's own master's
    writes without the ack (the mark lands before any emit), then the emits, then the acks,
    each sent only when every effect of its shard was written (a pipeline does not stop at a
    refused command, and an acked entry's effects must be in Redis: worker.effects). A shard
    whose master or whose destination's master fails loses its place in the later rounds;
    the other shards go on.
    """
    status: list[tuple[str, BaseException | None]] = [(WRITTEN, None)] * len(homes)
    own: list[Call] = []
    own_of: list[int] = []
    remote: list[Call] = []
    remote_of: list[int] = []
    acks: list[Call] = []
    acks_of: list[int] = []
    names: dict[str, str] = {}

    def master(key: str) -> str:
        name = names.get(key)
        if name is None:
            name = names[key] = masters.node_name(key)
        return name

    for s, home_key in enumerate(homes):
        rec = Recorder()
        queue(rec, s)
        home = master(home_key)
        mine: list[Call] = []
        away: list[Call] = []
        for call in rec.calls:
            (mine if master(call[1]) == home else away).append(call)
        if mine and mine[-1][0] == "xack":  # only once every effect is written
            acks.append(mine.pop())
            acks_of.append(s)
        own.extend(mine)
        own_of.extend([s] * len(mine))
        remote.extend(away)
        remote_of.extend([s] * len(away))
    for calls, of, bad in (
        (own, own_of, LOST),
        (remote, remote_of, LOST),
        (acks, acks_of, UNACKED),
    ):
        pick = [k for k, s in enumerate(of) if status[s][0] == WRITTEN]
        if not pick:
            continue
        sub = [calls[k] for k in pick]
        results = masters.run([c[1] for c in sub], _replay(sub))
        for k, res in zip(pick, results, strict=True):
            if isinstance(res, BaseException):
                if status[of[k]][0] == WRITTEN:
                    status[of[k]] = (bad, res)
                continue
            _raise_reply_error(res)
    return status
