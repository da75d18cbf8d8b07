"""Writing what a batch of applied entries emits, then acking them (ack after applying).

Every write here is safe to repeat: emitted events are deduplicated by their receivers by
(source, seq), outcomes and dead letters are appended at most once by their own sequence
number (``APPEND_ONCE``), and XACK is idempotent. So a batch whose reply was lost is simply
written again.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ledger.bundle import pack
from ledger.rules import DeadLetter, OutcomeRecord, StepResult
from store.keys import GROUP, Keys
from worker.scripts import INBOX_MOVE_LIMIT, Scripts


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


def queue_effects(
    pipe: Any,
    keys: Keys,
    scripts: Scripts,
    shard: str,
    results: Sequence[StepResult],
    ack_ids: Sequence[bytes | str],
    upto: str,
    *,
    mark: bool = False,
) -> None:
    """Queue, on a pipeline, the writes of one shard's batch, in order, ack last.

    ``upto`` is the last entry id the results cover. When the batch has any effect, the
    shard's written-mark is raised to it first, so a later takeover knows that entries at or
    below it may have effects out in Redis (and must never be skipped as poison). ``mark``
    raises it even when the batch has no effect (the takeover's entry-by-entry replay).
    """
    outcomes: list[OutcomeRecord] = []
    dead: list[DeadLetter] = []
    if mark or any(res.emits or res.outcomes or res.dead for res in results):
        scripts.mark_written(keys=[keys.written(shard)], args=[upto], client=pipe)
    emits: dict[str, list[str]] = {}
    for res in results:
        for e in res.emits:
            texts = emits.get(e.dest)
            if texts is None:
                emits[e.dest] = [e.text]
            else:
                texts.append(e.text)
        outcomes.extend(res.outcomes)
        if res.dead is not None:
            dead.append(res.dead)
    for dest, texts in emits.items():  # in order per destination: its seqs ascend
        # a bundle per destination (ledger.bundle): one entry for up to MAX_EVENTS events
        moves: list[Any] = [INBOX_MOVE_LIMIT, *pack(texts)]
        scripts.xadd_many(keys=[keys.events(dest), keys.inbox(dest)], args=moves, client=pipe)
    if outcomes:
        args: list[Any] = [1]
        for o in outcomes:
            args += [o.seq, "outcome", o.text]
        scripts.append_once(keys=[keys.outcomes(shard)], args=args, client=pipe)
    if dead:
        dargs: list[Any] = [5]
        for d in dead:
            dargs += [d.seq, *dead_letter_fields(d)]
        scripts.append_once(keys=[keys.dlq(shard)], args=dargs, client=pipe)
    if ack_ids:
        pipe.xack(keys.events(shard), GROUP, *ack_ids)
