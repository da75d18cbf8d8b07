"""Writing what a batch of applied entries emits, then acking them (ack after applying).

Every write here is safe to repeat: emitted events are deduplicated by their receivers by
(source, seq), outcomes and dead letters are appended at most once by their own sequence
number (``append_once``), and XACK is idempotent. So a batch whose reply was lost is simply
written again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from eventfleet.ledger.bundle import pack
from eventfleet.ledger.rules import DeadLetter, StepResult
from eventfleet.store.keys import GROUP, Keys
from eventfleet.worker.forwards import Moved, queue_moved
from eventfleet.worker.model import ModelWrite
from eventfleet.worker.scripts import INBOX_MOVE_LIMIT, OwnInboxes, Scripts


def dead_letter_fields(d: DeadLetter) -> list[str]:
    return [
        "shard",
        d.shard,
        "entry_id",
        d.entry_id,
        "reason",
        d.reason,
        "error",
        d.error,
        "raw",
        d.raw,
    ]


class Effects:
    """What one shard's batch of applied entries writes, collected result by result.

    The step results themselves are not kept: a batch of them (each with its emits and
    records) would live until the write and be scanned by every young-generation GC pass
    meanwhile; the texts and numbers kept here are not tracked by the GC at all.
    """

    __slots__ = ("dead", "emits", "model", "model_removed", "moved", "outcome_args")

    def __init__(self) -> None:
        self.emits: dict[str, list[str]] = {}
        """Destination shard -> the texts of the events for it, in seq order."""
        self.outcome_args: list[Any] = []
        """``seq, "outcome", text`` per outcome record, in seq order (``append_once``)."""
        self.dead: list[DeadLetter] = []
        self.model = ModelWrite()
        """The read-model fields the batch changed (``eventfleet.worker.model``)."""
        self.model_removed: list[str] = []
        """Read-model fields the batch's prune let go."""
        self.moved: Moved | None = None
        """A split shard's forwards and its children's seeds (``eventfleet.worker.forwards``)."""

    @classmethod
    def of(cls, results: Iterable[StepResult]) -> Effects:
        fx = cls()
        for res in results:
            fx.add(res)
        return fx

    def add(self, res: StepResult) -> None:
        for e in res.emits:
            texts = self.emits.get(e.dest)
            if texts is None:
                self.emits[e.dest] = [e.text]
            else:
                texts.append(e.text)
        for o in res.outcomes:
            self.outcome_args += (o.seq, "outcome", o.text)
        if res.dead is not None:
            self.dead.append(res.dead)

    def __bool__(self) -> bool:
        return bool(self.emits or self.outcome_args or self.dead or self.moved)


def queue_effects(
    pipe: Any,
    keys: Keys,
    scripts: Scripts,
    shard: str,
    effects: Effects,
    upto: str,
    *,
    mark: bool = False,
    token: str | None = None,
    own: Callable[[str], OwnInboxes] | None = None,
) -> None:
    """Queue, on a pipeline, the writes of one shard's batch, in order; the ack is not one of
    them (``queue_acks``): it is sent only once every effect is confirmed written.

    A pipeline is no transaction: a command refused (Redis full: ``XACK`` frees memory and is
    never refused) does not stop the next one, so an ack queued behind the effects could be
    taken while they were refused. An acked entry's effects must be in Redis: warm standbys
    fold exactly the acked entries, and a takeover from their copy does not emit them again.

    ``upto`` is the last entry id the effects cover. When the batch has any effect, the
    shard's written-mark is raised to it first, so a later takeover knows that entries at or
    below it may have effects out in Redis (and must never be skipped as poison). ``mark``
    raises it even when the batch has no effect (the takeover's entry-by-entry replay).

    The read model's changes (``token``: the shard's lease token, which fences them) go
    first, with the mark (``write_model.lua`` raises it too): a client that sees an order's
    outcome record finds the model already past it.
    """
    moved = effects.moved
    if moved is not None and moved.seeds:
        # a split: each child's seed and read model before the parent's model lets go of the
        # keys it took (a key's field is always in one of them), behind the written mark
        scripts.mark_written(pipe, written=keys.written(shard), upto=upto)
        queue_moved(pipe, keys, scripts, shard, moved)
        moved = None
    if token is not None and (effects.model or effects.model_removed):
        queue_model(pipe, keys, scripts, shard, token, upto, [effects.model], effects.model_removed)
    elif mark or effects:
        scripts.mark_written(pipe, written=keys.written(shard), upto=upto)
    for dest, texts in effects.emits.items():  # in order per destination: its seqs ascend
        # a bundle per destination (ledger.bundle): one entry for up to MAX_EVENTS events
        scripts.xadd_many(
            pipe,
            events=keys.events(dest),
            inbox=keys.inbox(dest),
            move_limit=INBOX_MOVE_LIMIT,
            texts=pack(texts),
            own=own(dest) if own else None,  # producers' own inboxes move first too
        )
    if moved is not None:
        queue_moved(pipe, keys, scripts, shard, moved)
    if effects.outcome_args:
        scripts.append_once(
            pipe, stream=keys.outcomes(shard), fields=1, records=effects.outcome_args
        )
    if effects.dead:
        dargs: list[Any] = []
        for d in effects.dead:
            dargs += [d.seq, *dead_letter_fields(d)]
        scripts.append_once(pipe, stream=keys.dlq(shard), fields=5, records=dargs)


def queue_model(
    pipe: Any,
    keys: Keys,
    scripts: Scripts,
    shard: str,
    token: str,
    upto: str,
    writes: Sequence[ModelWrite],
    removed: Sequence[str] = (),
) -> None:
    """Queue the read model's writes (``write_model.lua``), one script run per write (a whole
    model comes in slices that keep each run short); the removed fields go with the first."""
    for i, part in enumerate(writes or [ModelWrite()]):
        scripts.write_model(
            pipe,
            written=keys.written(shard),
            lease=keys.lease(shard),
            model=keys.model(shard),
            token=token,
            upto=upto,
            pairs=part.args(),
            removed=removed if i == 0 else (),
        )


def queue_acks(pipe: Any, keys: Keys, shard: str, ack_ids: Sequence[bytes | str]) -> None:
    """Queue the ack of a shard's applied entries (after their effects are written)."""
    if ack_ids:
        pipe.xack(keys.events(shard), GROUP, *ack_ids)
