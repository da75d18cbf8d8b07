"""Listing and re-driving dead letters.

A re-drive publishes each letter's event again under a source and seq derived from the
letter itself: source ``p:dlq.<letter's shard>.<reason>``, seq the letter's own sequence
number in its dead-letter stream (``append_once`` numbers them 1, 2, ... per stream). So any
number of re-drives, concurrent or re-run after a crash, publish each letter's effect under
the same (source, seq), and the receiving shard applies it once. Within one (shard, reason)
a re-drive always sends every letter that decodes, in seq order, which is the order a shard's
watermark needs (the ``--shard`` and ``--reason`` filters select whole groups).
"""

from __future__ import annotations

import json
from typing import Any

import redis

from ledger.codec import DecodeError, decode, encode, loads_object
from ledger.events import EXTERNAL_TYPES
from ledger.shards import ShardCounts, destination
from store import ids
from store.keys import EVENT_FIELD, Keys


def redriven_key(keys: Keys, shard: str) -> str:
    return f"{keys.ns}:{{{shard}}}:dlq:redriven"


def list_dead(
    r: redis.Redis, keys: Keys, counts: ShardCounts, *, include_redriven: bool = False
) -> list[dict[str, Any]]:
    out = []
    for shard in counts.all_shards():
        done: Any = r.smembers(redriven_key(keys, shard))
        done_ids = {ids.text(d) for d in done}
        entries: Any = r.xrange(keys.dlq(shard))
        for dlq_id_b, f in entries:
            dlq_id = ids.text(dlq_id_b)
            if dlq_id in done_ids and not include_redriven:
                continue
            out.append(
                {
                    "shard": shard,
                    "entry_id": ids.text(f[b"entry_id"]),
                    "dlq_id": dlq_id,
                    "reason": ids.text(f[b"reason"]),
                    "error": ids.text(f[b"error"]),
                    "raw": ids.text(f[b"raw"]),
                    "seq": int(f[b"seq"]),
                    "redriven": dlq_id in done_ids,
                }
            )
    return out


def redrive_source(shard: str, reason: str) -> str:
    """The producer source a letter of ``shard`` dead-lettered for ``reason`` is re-driven as."""
    return f"p:dlq.{shard}.{reason}"


def redrive(
    r: redis.Redis,
    keys: Keys,
    counts: ShardCounts,
    *,
    shard: str | None = None,
    reason: str | None = None,
    dry_run: bool = False,
) -> tuple[list[dict[str, Any]], list[str]]:
    """Publish dead letters again; return (what was re-driven, problems).

    Each re-driven letter is listed with the shard it went to. Letters that still do not
    decode stay put (and are listed in problems). With ``dry_run`` nothing is written.
    """
    done: list[dict[str, Any]] = []
    problems = []
    pending: list[tuple[dict[str, Any], str, str]] = []
    for d in list_dead(r, keys, counts):
        if (shard and d["shard"] != shard) or (reason and d["reason"] != reason):
            continue
        source = redrive_source(d["shard"], d["reason"])
        try:
            doc = loads_object(d["raw"])
            if doc is None:
                raise DecodeError("bad_json", "not a readable JSON object")
            doc["source"], doc["seq"] = source, d["seq"]
            event = decode(json.dumps(doc))
        except (ValueError, RecursionError, DecodeError) as exc:
            problems.append(f"{d['shard']} {d['entry_id']}: still invalid ({exc})")
            continue
        if event.type not in EXTERNAL_TYPES:  # only shards emit these (docs/SECURITY.md)
            problems.append(f"{d['shard']} {d['entry_id']}: a {event.type} is not redriven")
            continue
        dest = destination(event, counts)
        key = getattr(event, "key", None)
        pending.append((d, keys.events(dest), encode(event, source, d["seq"], key)))
        done.append({**d, "to": dest, "source": source})
    if not dry_run:
        for start in range(0, len(pending), 500):
            pipe = r.pipeline(transaction=False)
            chunk = pending[start : start + 500]
            for _d, stream, text in chunk:
                pipe.xadd(stream, {EVENT_FIELD: text})
            for d, _stream, _text in chunk:  # marked only after its event is out
                pipe.sadd(redriven_key(keys, d["shard"]), d["dlq_id"])
            pipe.execute()
    return done, problems
