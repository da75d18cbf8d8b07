"""Listing and re-driving dead letters.

A re-drive publishes each letter's event again under a source and seq derived from the
letter itself: source ``p:dlq.<letter's shard>.<reason>``, seq the letter's own sequence
number in its dead-letter stream (``append_once`` numbers them 1, 2, ... per stream). So any
number of re-drives, concurrent or re-run after a crash, publish each letter's effect under
the same (source, seq), and the receiving shard applies it once. Within one (shard, reason)
a re-drive always sends every letter that decodes, in seq order, which is the order a shard's
watermark needs (the ``--shard`` and ``--reason`` filters select whole groups).

A re-drive's entries are written as the operators' identity (``ops``: fields ``via inbox``
and ``by ops``, which only the admin user can write into a shard's log), so the shard counts
their source as ``ops/p:dlq...``: no producer can pre-claim it (a producer's sources count
within its own name, or unscoped for the shared inbox, never within ``ops``).
"""

from __future__ import annotations

import json
from typing import Any

import redis

from eventfleet.ledger.bundle import is_bundle, split
from eventfleet.ledger.codec import DecodeError, decode, encode, loads_object
from eventfleet.ledger.events import EXTERNAL_TYPES
from eventfleet.ledger.rules import DEAD_LETTER_REASONS
from eventfleet.ledger.shards import ShardCounts, destination
from eventfleet.store import ids
from eventfleet.store.keys import BY_FIELD, EVENT_FIELD, VIA_FIELD, VIA_INBOX, Keys
from eventfleet.store.producers import OPS


def redriven_key(keys: Keys, shard: str) -> str:
    return f"{keys.ns}:{{{shard}}}:dlq:redriven"


def discarded_key(keys: Keys, shard: str) -> str:
    """Hash: dead-letter id -> why it was discarded (``dlq discard``'s note and time)."""
    return f"{keys.ns}:{{{shard}}}:dlq:discarded"


def list_dead(
    r: redis.Redis, keys: Keys, counts: ShardCounts, *, include_redriven: bool = False
) -> list[dict[str, Any]]:
    """Dead letters still to deal with: neither re-driven nor discarded (both too with
    ``include_redriven``)."""
    out = []
    for shard in counts.all_shards():
        done: Any = r.smembers(redriven_key(keys, shard))
        done_ids = {ids.text(d) for d in done}
        dropped: Any = r.hkeys(discarded_key(keys, shard))
        dropped_ids = {ids.text(d) for d in dropped}
        entries: Any = r.xrange(keys.dlq(shard))
        for dlq_id_b, f in entries:
            dlq_id = ids.text(dlq_id_b)
            if (dlq_id in done_ids or dlq_id in dropped_ids) and not include_redriven:
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
                    "discarded": dlq_id in dropped_ids,
                }
            )
    return out


def check_filters(counts: ShardCounts, shard: str | None, reason: str | None) -> None:
    """``--shard`` and ``--reason`` must name a shard of the namespace and a reason a dead
    letter can give (a typo would otherwise select nothing and look like success)."""
    if shard is not None and shard not in counts.all_shards():
        raise ValueError(
            f"no shard {shard!r} in this namespace (u0-u{counts.users - 1}, i0-i{counts.items - 1})"
        )
    if reason is not None and reason not in DEAD_LETTER_REASONS:
        raise ValueError(
            f"no dead-letter reason {reason!r} (one of {', '.join(DEAD_LETTER_REASONS)})"
        )


def letter_events(d: dict[str, Any], counts: ShardCounts) -> list[tuple[Any, str, int]] | str:
    """The events a letter re-drives as (event, source, seq), or why it cannot be: it still
    does not decode, or holds what is no external event. A letter that is a bundle (a poison
    mark on an entry of several events) re-drives each of its events, under a source of the
    letter's own (``redrive_source`` + ``.<letter seq>``, numbered 1, 2, ...), since the
    shard's one re-drive source counts one seq per letter; every part must decode, or none is
    sent."""
    raw = d["raw"]
    parts = split(raw) if is_bundle(raw) else (raw,)
    base = redrive_source(d["shard"], d["reason"])
    if len(parts) == 1 and not is_bundle(raw):
        numbered = [(parts[0], base, int(d["seq"]))]
    else:
        own = f"{base}.{d['seq']}"
        numbered = [(part, own, i) for i, part in enumerate(parts, 1)]
    out = []
    for part, source, seq in numbered:
        try:
            doc = loads_object(part)
            if doc is None:
                raise DecodeError("bad_json", "not a readable JSON object")
            doc["source"], doc["seq"] = source, seq
            event = decode(json.dumps(doc))
        except (ValueError, RecursionError, DecodeError) as exc:
            return f"still invalid ({exc})"
        if event.type not in EXTERNAL_TYPES:  # only shards emit these (docs/SECURITY.md)
            return f"a {event.type} is not redriven"
        out.append((event, source, seq))
    return out


def still_invalid(d: dict[str, Any], counts: ShardCounts) -> str | None:
    """Why a letter cannot be re-driven (``letter_events``), or None when it can."""
    got = letter_events(d, counts)
    return got if isinstance(got, str) else None


def discard(
    r: redis.Redis,
    keys: Keys,
    counts: ShardCounts,
    *,
    shard: str | None = None,
    reason: str | None = None,
    entry_ids: tuple[str, ...] = (),
    undecodable: bool = False,
    note: str = "",
    dry_run: bool = False,
) -> list[dict[str, Any]]:
    """Mark dead letters as dealt with for good: the given entries (``entry_ids``, the
    shard's entry ids as ``dlq list`` shows them), or with ``undecodable`` every letter a
    re-drive would leave as still invalid, within the ``shard`` and ``reason`` filters.

    The letter itself stays in its dead-letter stream, which is what ``verify`` recomputes
    from the log (deleting it would be a lost record); it is only left out of ``dlq list``
    and ``dlq redrive`` from then on, and its id, note and time are kept in
    ``NS:{f}:dlq:discarded``. Discarding twice changes nothing."""
    picked = []
    wanted = set(entry_ids)
    for d in list_dead(r, keys, counts):
        if (shard and d["shard"] != shard) or (reason and d["reason"] != reason):
            continue
        named = d["entry_id"] in wanted or d["dlq_id"] in wanted
        if named or (undecodable and still_invalid(d, counts) is not None):
            picked.append(d)
    missing = wanted - {d["entry_id"] for d in picked} - {d["dlq_id"] for d in picked}
    if missing:
        raise ValueError(
            f"no dead letter {', '.join(sorted(missing))} to discard"
            + (f" in {shard}" if shard else "")
            + " (see `eventfleet dlq list`)"
        )
    if not dry_run and picked:
        at: Any = r.time()
        record = json.dumps({"note": note, "at_ms": int(at[0]) * 1000 + int(at[1]) // 1000})
        pipe = r.pipeline(transaction=False)
        for d in picked:
            pipe.hsetnx(discarded_key(keys, d["shard"]), d["dlq_id"], record)
        pipe.execute()
    return picked


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
    pending: list[tuple[dict[str, Any], str, str, bool]] = []
    for d in list_dead(r, keys, counts):
        if (shard and d["shard"] != shard) or (reason and d["reason"] != reason):
            continue
        got = letter_events(d, counts)
        if isinstance(got, str):
            problems.append(f"{d['shard']} {d['entry_id']}: {got}")
            continue
        dests = []
        for n, (event, source, seq) in enumerate(got):
            dest = destination(event, counts)
            dests.append(dest)
            key = getattr(event, "key", None)
            last = n == len(got) - 1  # the letter is marked with its last event
            pending.append((d, keys.events(dest), encode(event, source, seq, key), last))
        sources = sorted({f"{OPS}/{source}" for _e, source, _s in got})
        done.append({**d, "to": ",".join(sorted(set(dests))), "source": ",".join(sources)})
    if not dry_run:
        for start in range(0, len(pending), 500):
            pipe = r.pipeline(transaction=False)
            chunk = pending[start : start + 500]
            for _d, stream, text, _last in chunk:
                pipe.xadd(stream, {EVENT_FIELD: text, VIA_FIELD: VIA_INBOX, BY_FIELD: OPS})
            for d, _stream, _text, last in chunk:  # marked only after its events are out
                if last:
                    pipe.sadd(redriven_key(keys, d["shard"]), d["dlq_id"])
            pipe.execute()
    return done, problems
