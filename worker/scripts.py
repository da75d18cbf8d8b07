"""The worker's Lua scripts (``eventfleet/store/lua/*.lua``) behind typed wrappers, one per script,
that
own its KEYS and ARGV order. Each script touches the keys of one shard only (one hash tag,
one cluster slot), or the membership keys (one hash tag too).

The fence: every write that a paused, superseded worker could make stale first checks that
the shard's lease still holds this worker's ``<worker id>:<epoch>`` token. Reads through the
consumer group are fenced too, so a zombie cannot pull entries away from the new owner.

allow-oom is on the small bookkeeping scripts (acquire, save_snapshot, heartbeat, retain):
when Redis is at maxmemory, ownership and snapshots must go on, since a snapshot is what lets
retention trim and so free memory. A snapshot replaces the previous one of about the same
size. The writes that grow the data (events, outcomes, dead letters) stay refused until
memory is freed.

Every wrapper takes the client first: a ``redis.Redis`` (or the cluster client) or a pipeline
of it, on which the script is queued.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import redis
from redis.exceptions import ResponseError

from eventfleet.ledger.bundle import MAX_EVENTS, MAX_PACK_CHARS
from eventfleet.ledger.codec import MAX_ENTRY_BYTES
from eventfleet.store import lua
from eventfleet.store.keys import Keys
from eventfleet.store.lua import MOVE_INBOX, PRELUDE
from eventfleet.store.producers import OWN_MAX_ELEMENT, Bounds, moved_names
from eventfleet.store.scripts import LuaScript, load_script

FENCED = "FENCED"
"""The error code ``fenced_read`` replies with when the shard's lease is no longer ours."""
BLOCKED = "BLOCKED"
"""The error code ``fenced_read`` replies with when it could neither move an inbox entry into
the log (the stream refuses new entries: missing, or at the largest id) nor read one."""

INBOX_MOVE_LIMIT = 1000
"""Most inbox elements ``xadd_many`` moves before appending a batch's emitted events."""

MOVE_LIMITS = (MAX_ENTRY_BYTES, MAX_EVENTS, MAX_PACK_CHARS)
"""``move_inbox``'s limits, the first ARGV of the scripts that move an inbox: an element up to
``MAX_ENTRY_BYTES`` may join a bundle of up to ``MAX_EVENTS`` events and ``MAX_PACK_CHARS``
characters (``eventfleet.ledger.bundle``, which cuts bundles back at exactly these elements)."""

DEFAULT_BOUNDS = Bounds()


@dataclass(frozen=True, slots=True)
class OwnInboxes:
    """The producers' own inboxes of one shard as a move takes them (``move_inbox.lua``):
    their keys, the producer names (stamped on what is moved), the dropped counts' hash and
    the bound of each inbox (``eventfleet.store.producers``)."""

    dropped: str
    inboxes: tuple[str, ...] = ()
    names: tuple[str, ...] = ()
    bounds: Bounds = DEFAULT_BOUNDS

    @classmethod
    def none(cls, events: str) -> OwnInboxes:
        """No own inbox (the dropped hash named after the shard of ``events``)."""
        return cls(events.removesuffix(":events") + ":dropped")

    @classmethod
    def of(cls, keys: Keys, shard: str, names: Sequence[str], bounds: Bounds) -> OwnInboxes:
        moved = moved_names(list(names))
        inboxes = tuple(keys.inbox(shard, n) for n in moved)
        return cls(keys.dropped(shard), inboxes, tuple(moved), bounds)

    def args(self) -> list[Any]:
        return [OWN_MAX_ELEMENT, self.bounds.events, self.bounds.bytes, *self.names]


REGISTER = lua.source("register", PRELUDE)
EXPEL = lua.source("expel", PRELUDE)


def is_fenced(reply: object) -> bool:
    """Whether a ``fenced_read`` reply (taken from a pipeline with ``raise_on_error=False``)
    is its refusal: an error reply whose code is ``FENCED``."""
    return isinstance(reply, ResponseError) and str(reply).partition(" ")[0] == FENCED


def is_blocked(reply: object) -> bool:
    """Whether a ``fenced_read`` reply says the shard's log takes no new entries."""
    return isinstance(reply, ResponseError) and str(reply).partition(" ")[0] == BLOCKED


def register_command(
    *, live: str, gone: str, worker_id: str, client_id: int | None, node: str, stale_after_ms: int
) -> tuple[Any, ...]:
    """The EVAL command (sent with its text on the liveness connection) that registers a
    worker's liveness connection: a member ``<worker id> <client id> <node>`` of ``live``
    scored with Redis' time, replacing its earlier one; clears the worker from ``gone``, and
    drops records not refreshed for ``stale_after_ms`` (workers that died while nobody
    checked). Its reply is Redis' time (ms)."""
    return ("EVAL", REGISTER, 2, live, gone, worker_id, client_id, node, stale_after_ms)


def expel_command(
    *, live: str, workers: str, gone: str, worker_id: str, record: str, ttl_ms: int
) -> tuple[Any, ...]:
    """The EVAL command that expels a worker whose registered connection is gone, if it is
    still registered with that connection (``record``, its member of ``live``): removed from
    ``live`` and ``workers``, and held in ``gone`` until its leases would lapse (``ttl_ms``).
    Its reply is 1 when expelled, 2 when another worker expelled it already, 0 when its record
    changed meanwhile (it registered again, or left cleanly)."""
    return ("EVAL", EXPEL, 3, live, workers, gone, worker_id, record, ttl_ms)


class Scripts:
    """The worker's scripts loaded for one client (EVALSHA on a single Redis, EVAL on a
    cluster: ``eventfleet.store.scripts.load_script``)."""

    def __init__(self, r: redis.Redis) -> None:
        def load(name: str, *pieces: str) -> LuaScript:
            return load_script(r, lua.source(name, *pieces))

        self._acquire = load("acquire")
        self._renew = load("renew")
        self._release = load("release")
        self._save_snapshot = load("save_snapshot")
        self._fenced_read = load("fenced_read", MOVE_INBOX)
        self._append_once = load("append_once")
        self._mark_written = load("mark_written", PRELUDE)
        self._heartbeat = load("heartbeat", PRELUDE)
        self._retain = load("retain", PRELUDE)
        self._xadd_many = load("xadd_many", MOVE_INBOX)
        self._tail = load("tail")
        self._write_model = load("write_model", PRELUDE)
        self._forward_once = load("forward_once", PRELUDE)

    @classmethod
    def register(cls, r: redis.Redis) -> Scripts:
        """The scripts loaded for ``r`` (the same as ``Scripts(r)``)."""
        return cls(r)

    def load(self, r: redis.Redis) -> None:
        """``SCRIPT LOAD`` every script into ``r``: for a caller that sends them by SHA alone
        and met ``NOSCRIPT`` (Redis restarted, or its scripts were flushed). Each is a
        redis-py registered script, which keeps its text and SHA."""
        for script in vars(self).values():
            text = getattr(script, "script", None)
            if isinstance(text, str | bytes) and hasattr(script, "sha"):
                script.sha = r.script_load(text)

    # ---- leases and membership --------------------------------------------------------
    def acquire(
        self,
        client: Any,
        *,
        lease: str,
        epoch: str,
        worker_id: str,
        ttl_ms: int,
        reclaim: bool = False,
        breakable: Iterable[str] = (),
    ) -> Any:
        """Take the shard's lease with a new epoch (INCR of ``epoch``) for ``ttl_ms``.

        Returns the new epoch (an int) when the lease was free; ``[new epoch, broken token]``
        when it was held by one of ``breakable`` (workers whose liveness connection closed:
        ``eventfleet.worker.liveness``); else the holder's token (bytes), and nothing is written.
        With
        ``reclaim``, a lease still held under ``worker_id`` (an earlier process of the same
        member: static membership) is taken back with a new epoch, which fences that earlier
        process if it still runs."""
        return self._acquire(
            keys=[lease, epoch],
            args=[worker_id, ttl_ms, "1" if reclaim else "0", *breakable],
            client=client,
        )

    def renew(self, client: Any, *, lease: str, token: str, ttl_ms: int) -> Any:
        """Extend the lease to ``ttl_ms`` from now if it holds ``token``: 1, else 0."""
        return self._renew(keys=[lease], args=[token, ttl_ms], client=client)

    def release(self, client: Any, *, lease: str, token: str) -> Any:
        """Delete the lease if it holds ``token``: 1, else 0."""
        return self._release(keys=[lease], args=[token], client=client)

    def heartbeat(self, client: Any, *, workers: str, worker_id: str, ttl_ms: int) -> Any:
        """Heartbeat with Redis' clock (no skew between hosts) and prune the dead: ``worker_id``
        (``""``: prune only) expires ``ttl_ms`` from now in the ``workers`` zset. Returns
        ``[now ms, [member, expiry ms, ...]]`` of the live members."""
        return self._heartbeat(keys=[workers], args=[worker_id, ttl_ms], client=client)

    # ---- the shard's log -------------------------------------------------------------
    def fenced_read(
        self,
        client: Any,
        *,
        lease: str,
        events: str,
        inbox: str,
        token: str,
        consumer: str,
        count: int,
        start: str,
        applied_to: str,
        move_limit: int,
        own: OwnInboxes | None = None,
    ) -> Any:
        """Read up to ``count`` entries of ``events`` through the group, if the lease holds
        ``token``; else the error reply ``FENCED`` (``is_fenced``) and nothing moves.

        ``start`` other than ``">"`` re-reads our pending entries after it. Before reading new
        entries (``">"``), entries of ours still pending after ``applied_to`` are handed over
        first: a read whose reply was lost delivered them, and a client that re-sent that read
        on its own (redis-py does after a connection error, the cluster pipeline one command
        at a time) would otherwise step over them. Then up to ``move_limit`` inbox elements
        (what producers appended; element 1 is the head, which stays) move into the log in
        order, with server-assigned ids and the mark 'via inbox', followed by one LTRIM, so
        nothing is moved twice or lost; only the lease holder moves. Elements that are one
        flat JSON object (no braces or brackets inside, at most ``MAX_ENTRY_BYTES``: every
        valid event is one) are joined into bundles (``MOVE_LIMITS``); any other element gets
        an entry of its own, so no element can change where its neighbours start or end.
        When nothing could be read and the stream refused the move (missing, or at the
        largest id), the error reply ``BLOCKED`` (``is_blocked``).

        ``own``: the producers' own inboxes of the shard, moved with ``inbox`` (the shared
        one), the move limit shared between those with data; each is first held to its bound
        and its entries are stamped with the producer's name (``move_inbox.lua``)."""
        o = own or OwnInboxes.none(events)
        return self._fenced_read(
            keys=[lease, events, o.dropped, inbox, *o.inboxes],
            args=[
                *MOVE_LIMITS, token, consumer, count, start, applied_to, move_limit, *o.args()
            ],
            client=client,
        )  # fmt: skip

    def xadd_many(
        self,
        client: Any,
        *,
        events: str,
        inbox: str,
        move_limit: int,
        texts: Sequence[Any],
        own: OwnInboxes | None = None,
    ) -> Any:
        """Append ``texts`` to ``events`` in order with server-made ids, after moving up to
        ``move_limit`` elements of ``inbox`` into the log first (as ``fenced_read`` moves
        them; the limit keeps a producer flooding an inbox from making one script run long).
        An event a producer published before the one that caused these (a top-up before the
        order whose charge this is) so stays before them in the log. Returns how many texts
        were appended.

        One call per destination shard and batch instead of an XADD per emitted event. Safe to
        repeat, like XADDs: the receiver deduplicates by (source, seq). All or none when Redis
        is full (maxmemory): a script is refused at its first write when Redis was full as it
        started, and once it has written it runs to the end. Plain pipelined XADDs could see
        one refused and a later one accepted (memory freed in between); sent again, the
        refused one would land after a higher seq of the same source and the receiver would
        drop it as a duplicate."""
        o = own or OwnInboxes.none(events)
        return self._xadd_many(
            keys=[events, o.dropped, inbox, *o.inboxes],
            args=[*MOVE_LIMITS, move_limit, *o.args(), *texts],
            client=client,
        )

    def append_once(self, client: Any, *, stream: str, fields: int, records: Sequence[Any]) -> Any:
        """Append records to ``stream`` at most once each, by a per-stream sequence number kept
        in the records themselves (field ``seq``). ``records`` is flat: per record its seq,
        then ``fields`` name/value pairs. Records at or below the stream's last seq are
        skipped. Returns how many were added."""
        return self._append_once(keys=[stream], args=[fields, *records], client=client)

    def forward_once(
        self,
        client: Any,
        *,
        events: str,
        marks: str,
        snapshot: str,
        model: str,
        sender: str,
        seed: bytes | str,
        pairs: Sequence[str],
        records: Sequence[Any],
    ) -> Any:
        """What a split shard (``sender``) writes to one child: the seed's read-model
        ``pairs`` (flat field/value words) and its ``seed`` snapshot, both only where the
        child has no snapshot yet (``b""``: no seed in this call), and the forwarded entries,
        flat: per entry the sender's entry id, the path, the scope and the text; each sender
        entry's at most once (``forward_once.lua``). Returns how many entries were
        appended."""
        return self._forward_once(
            keys=[events, marks, snapshot, model],
            args=[sender, seed, len(pairs), *pairs, *records],
            client=client,
        )

    def mark_written(self, client: Any, *, written: str, upto: str) -> Any:
        """Raise the shard's "effects written up to" mark to the entry id ``upto``; never lower
        it (1 when raised, else 0). Queued before a batch's effects on the same connection, so
        Redis runs it first: an entry above the mark has had none of its effects written by
        anyone."""
        return self._mark_written(keys=[written], args=[upto], client=client)

    # ---- snapshots, retention, standbys ------------------------------------------------
    def save_snapshot(
        self, client: Any, *, lease: str, snapshot: str, token: str, data: bytes | str
    ) -> Any:
        """Write ``data`` as the shard's snapshot if the lease holds ``token``: 1, else 0."""
        return self._save_snapshot(keys=[lease, snapshot], args=[token, data], client=client)

    def retain(
        self,
        client: Any,
        *,
        lease: str,
        events: str,
        outcomes: str,
        dlq: str,
        snapshot: str,
        trim_base: str,
        archived: str,
        token: str,
        snapshot_id: str,
        snapshot_ms: int,
        window_ms: int,
        wait_for_archive: bool,
    ) -> Any:
        """Trim the shard's streams, fenced by the lease: -1 when it does not hold ``token``,
        else ``[events, outcomes, dlq]`` entries removed.

        Events go only below ``snapshot_id`` (the last entry id of the snapshot this owner just
        saved: MINID keeps the snapshot's own entry and all after it), below the window
        (``window_ms`` back from Redis' time) and at or below the ``archived`` mark of the
        stream (with ``wait_for_archive``, nothing goes while there is no mark): takeover
        replays from the snapshot and dedup lives in its watermarks, so no reader of the
        stream needs what goes. Before the first removal the snapshot is copied to
        ``trim_base``, the state ``verify`` folds from. Outcomes and dead letters go below the
        window and ``snapshot_ms`` (the snapshot's wall time), and the last record always
        stays: ``append_once`` reads its seq. allow-oom: trimming is what frees memory, so it
        runs when Redis is full (the COPY of the base is the only write that can grow it)."""
        return self._retain(
            keys=[lease, events, outcomes, dlq, snapshot, trim_base, archived],
            args=[token, snapshot_id, snapshot_ms, window_ms, 1 if wait_for_archive else 0],
            client=client,
        )

    def tail(self, client: Any, *, events: str, poison: str, after: str, count: int) -> Any:
        """What a warm standby reads (no writes): ``[entries, poison, deleted, first]``: up to
        ``count`` entries after ``after`` that the group has delivered and that are not
        pending (acked), the ``poison`` set, the stream's max-deleted-entry-id (XDEL), and its
        first entry id once anything was removed (XTRIM moves only that; "0-0" when nothing
        ever was); ``[]`` when the stream has no group."""
        return self._tail(keys=[events, poison], args=[after, count], client=client)

    def write_model(
        self,
        client: Any,
        *,
        written: str,
        lease: str,
        model: str,
        token: str,
        upto: str,
        pairs: Sequence[str],
        removed: Sequence[str] = (),
    ) -> Any:
        """Raise the ``written`` mark to ``upto`` (as ``mark_written``), then set the fields
        ``pairs`` holds (``eventfleet.worker.model.ModelWrite.args``: field, value, field,
        value ...) in the shard's read model and delete ``removed`` fields, fenced by the lease
        and never behind the model's own ``_upto``: 1 when written, 2 when written into a
        model that had no ``_upto`` (write every value next), 0 when refused (not the holder,
        or the model folds past ``upto`` already)."""
        if len(pairs) % 2:
            raise ValueError("write_model takes field/value pairs: an even number of words")
        args: list[Any] = [token, upto, len(pairs), *pairs, *removed]
        return self._write_model(keys=[written, lease, model], args=args, client=client)
