"""Listing and re-driving dead letters."""

from __future__ import annotations

import json
import uuid
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
                    "redriven": dlq_id in done_ids,
                }
            )
    return out


def redrive(
    r: redis.Redis,
    keys: Keys,
    counts: ShardCounts,
    *,
    shard: str | None = None,
    reason: str | None = None,
) -> tuple[int, list[str]]:
    """Publish dead letters again as new events from a fresh source; return (sent, problems).

    They are re-stamped, since the original (source, seq) may be below the shard's watermark
    by now and would be dropped as a duplicate. Letters that still do not decode stay put.
    """
    source = f"p:redrive-{uuid.uuid4().hex[:16]}"
    seqs: dict[str, int] = {}
    sent = 0
    problems = []
    for d in list_dead(r, keys, counts):
        if (shard and d["shard"] != shard) or (reason and d["reason"] != reason):
            continue
        try:
            doc = loads_object(d["raw"])
            if doc is None:
                raise DecodeError("bad_json", "not a readable JSON object")
            doc["source"], doc["seq"] = source, 1
            event = decode(json.dumps(doc))
        except (ValueError, DecodeError) as exc:
            problems.append(f"{d['shard']} {d['entry_id']}: still invalid ({exc})")
            continue
        if event.type not in EXTERNAL_TYPES:  # only shards emit these (docs/SECURITY.md)
            problems.append(f"{d['shard']} {d['entry_id']}: a {event.type} is not redriven")
            continue
        dest = destination(event, counts)
        seqs[dest] = seqs.get(dest, 0) + 1
        r.xadd(keys.events(dest), {EVENT_FIELD: encode(event, source, seqs[dest])})
        r.sadd(redriven_key(keys, d["shard"]), d["dlq_id"])
        sent += 1
    return sent, problems
