"""The checks of a chaos run whose namespace grew online (``--reshard``), on top of ``verify``:

- ``follow_sends``: every event the paced producers stamped, (shard, seq), is taken exactly
  once: applied on that shard, dead-lettered there, or forwarded and applied where its path
  ended (a forwarded event is counted under ``source@path`` by the child, the path starting
  with the shard it was sent to); ``follow_receipts`` does so for the clients' receipts (the
  readers' top-ups, the waiters' orders). ``verify`` alone does not see a forwarded event
  that the child dropped as a repeat (it only compares the forward with the child's log), nor
  one applied both directly and forwarded (they count under two names);
- ``reads_across``: the readers' reads held to their users' history across the splits: the
  user's shard under the counts at ``init`` folded with its markers, then each shard the user
  moved to, from the seed its parent's fold gave (``eventfleet.chaos.readers`` for the rule);
- ``owned``: every shard of the final counts held by a live worker;
- ``verify_command``: ``eventfleet verify`` run as the operator runs it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from typing import Any

import redis

from eventfleet.chaos.readers import SKEW_MS, Read, ReadCheck
from eventfleet.client import Receipt
from eventfleet.ledger.results import SplitResult, StepResult
from eventfleet.ledger.shards import ShardCounts, user_shard
from eventfleet.ledger.state import ShardState
from eventfleet.ops.verify import Report
from eventfleet.store import ids
from eventfleet.store.fold import fold
from eventfleet.store.keys import Keys
from eventfleet.store.shardreads import poison_ids

FWD = b"fwd"


def follow_sends(
    result: Report, source: str, wire_source: str, sent: dict[str, list[int]]
) -> tuple[int, int]:
    """(lost, taken twice) of the events ``source`` stamped, ``sent``: shard -> seqs."""
    taken: dict[str, dict[int, int]] = {}
    for shard, f in result.folds.items():
        forwarded = _forwarded_seqs(f.forwards, wire_source)
        own = taken.setdefault(shard, {})
        for seq in f.applied_seqs.get(source, ()):
            own[seq] = own.get(seq, 0) + 1
        for seq in f.dead_seqs.get(source, set()) - forwarded:
            own[seq] = own.get(seq, 0) + 1
        for name, seqs in f.applied_seqs.items():
            src, at, path = name.partition("@")
            if not at or src != source:
                continue
            origin = taken.setdefault(path.split(".")[0], {})
            for seq in seqs:
                origin[seq] = origin.get(seq, 0) + 1
    lost = twice = 0
    for shard, stamped in sent.items():
        got = taken.get(shard, {})
        for seq in stamped:
            n = got.get(seq, 0)
            lost += n == 0
            twice += n > 1
    return lost, twice


def by_source(receipts: Iterable[Receipt]) -> dict[str, dict[str, list[int]]]:
    """The clients' receipts as ``follow_sends`` takes them: per source, shard -> seqs."""
    out: dict[str, dict[str, list[int]]] = {}
    for rc in receipts:
        out.setdefault(rc.source, {}).setdefault(rc.shard, []).append(rc.seq)
    return out


def follow_receipts(result: Report, receipts: Iterable[Receipt]) -> tuple[int, int, int]:
    """``follow_sends`` for every client source of ``receipts`` (the readers' top-ups, the
    waiters' orders): (events followed, lost, taken twice)."""
    n = lost = twice = 0
    for source, sent in by_source(receipts).items():
        wire = source.rpartition("/")[2]  # without the producer identity's scope
        got = follow_sends(result, source, wire, sent)
        n += sum(len(seqs) for seqs in sent.values())
        lost, twice = lost + got[0], twice + got[1]
    return n, lost, twice


def forward_counts(result: Report) -> dict[str, int]:
    """Events the folds forwarded: all, and those on their second hop or later (a path of
    two shards or more, ``u1.u5``)."""
    hops = [(path, n) for f in result.folds.values() for c in f.forwards.values()
            for (path, _scope, _text), n in c.items()]  # fmt: skip
    return {
        "events": sum(n for _path, n in hops),
        "second_hop": sum(n for path, n in hops if "." in path),
    }


def _forwarded_seqs(forwards: dict[str, Any], wire_source: str) -> set[int]:
    """The seqs of ``wire_source``'s events a fold forwarded (to any child)."""
    out = set()
    for counter in forwards.values():
        for _path, _scope, text in counter:
            doc = json.loads(text)
            if doc.get("source") == wire_source:
                out.add(int(doc["seq"]))
    return out


def lineage(user: int, init: ShardCounts, steps: Sequence[tuple[int, int]]) -> tuple[str, ...]:
    """The user shards ``user`` was on: under the counts at ``init``, then each step's."""
    chain = [user_shard(user, init)]
    for users, items in steps:
        s = user_shard(user, ShardCounts(users, items))
        if s != chain[-1]:
            chain.append(s)
    return tuple(chain)


def reads_across(
    r: redis.Redis,
    keys: Keys,
    init: ShardCounts,
    steps: Sequence[tuple[int, int]],
    reads: list[Read],
    errors: int = 0,
) -> ReadCheck:
    """Each read held to its user's history across the splits: a value the balance took at or
    after the entry that applied the read's receipt, and not after the read ended."""
    out = ReadCheck(reads=len(reads), errors=errors)
    by_chain: dict[tuple[str, ...], set[int]] = {}
    for rd in reads:
        by_chain.setdefault(lineage(rd.user, init, steps), set()).add(rd.user)
    for chain, users in by_chain.items():
        history, where = _history(r, keys, init, chain, users)
        for rd in (x for x in reads if x.user in users):
            start = where.get((rd.receipt.shard, rd.receipt.source, rd.receipt.seq))
            if start is None:
                out.wrong.append(f"user {rd.user}: receipt {rd.receipt.ref} not in the logs")
                continue
            late = rd.done_ms + SKEW_MS
            ok = {v for pos, ms, v in history[rd.user] if pos >= start and ms <= late}
            if rd.value not in ok:
                out.wrong.append(
                    f"user {rd.user}: read {rd.value} after {rd.receipt.ref}, "
                    f"the logs of {'/'.join(chain)} give one of {sorted(ok)[:5]}"
                )
    return out


def _history(
    r: redis.Redis, keys: Keys, init: ShardCounts, chain: tuple[str, ...], users: set[int]
) -> tuple[dict[int, list[tuple[int, int, int]]], dict[tuple[str, str, int], int]]:
    """Per user, ``(position, entry ms, balance)`` at each change along ``chain`` (each shard
    folded whole, the next from the seed the folds gave); and the position that applied each
    (shard sent to, source, seq)."""
    history: dict[int, list[tuple[int, int, int]]] = {u: [] for u in users}
    where: dict[tuple[str, str, int], int] = {}
    seeds: dict[str, ShardState] = {}
    pos = 0
    for shard in chain:
        seed = seeds.get(shard)
        state = ShardState(shard) if seed is None else seed
        entry = {"fwd": ""}

        def on_fields(_eid: str, fields: dict[bytes, bytes], entry: dict[str, str] = entry) -> None:
            entry["fwd"] = (fields.get(FWD) or b"").decode()

        def on_step(
            eid: str, _raw: bytes | None, res: StepResult, shard: str = shard,
            state: ShardState = state, entry: dict[str, str] = entry,
        ) -> None:  # fmt: skip
            nonlocal pos
            pos += 1
            if isinstance(res, SplitResult):
                seeds.update(res.seeds)
            w = res.wire
            if w is not None and res.kind in ("applied", "duplicate"):
                sent_to = entry["fwd"].split(".")[0] or shard
                where.setdefault((sent_to, w.source, w.seq), pos)
            for u in users:
                bal = state.balances.get(u)
                if bal is not None and (not history[u] or history[u][-1][2] != bal):
                    history[u].append((pos, ids.millis(eid), bal))

        fold(
            r, keys.events(shard), state, init, poison_ids(r, keys, shard),
            on_step=on_step, on_fields=on_fields, splits=True,
        )  # fmt: skip
    return history, where


def unowned_within(r: redis.Redis, keys: Keys, counts: ShardCounts, timeout_s: float) -> list[str]:
    """The shards still without an owner after up to ``timeout_s`` (``owned`` asked every
    0.1 s): a shard whose takeover is under way at the end (a worker killed by the last
    fault, its lease lapsing) is owned again within a lease's TTL; one never taken is not."""
    deadline = time.monotonic() + timeout_s
    while (left := owned(r, keys, counts)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


def owned(r: redis.Redis, keys: Keys, counts: ShardCounts) -> list[str]:
    """The shards of ``counts`` that no worker holds (one ``GET`` per lease in a pipeline:
    each lease is in its shard's slot, so on Redis Cluster no one command reads them all)."""
    pipe = r.pipeline(transaction=False)
    for s in counts.all_shards():
        pipe.get(keys.lease(s))
    leases: Any = pipe.execute()
    return [s for s, v in zip(counts.all_shards(), leases, strict=True) if v is None]


def verify_command(env: dict[str, str]) -> dict[str, Any]:
    """``eventfleet verify --json`` as a process of its own (``env``: how it reaches the
    namespace, as the admin user), as an operator checks a namespace after a growth: its exit
    code and counts."""
    proc = subprocess.run(
        [sys.executable, "-m", "eventfleet", "verify", "--json"],
        env={**os.environ, **env}, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    out: dict[str, Any] = {"exit": proc.returncode}
    try:
        doc = json.loads(proc.stdout)
    except ValueError:
        out["stderr"] = proc.stderr.strip()[-300:]
        return out
    keys = ("ok", "mismatches", "lost", "duplicates_applied", "invariant_violations")
    out.update({k: doc.get(k) for k in keys})
    out["shards"] = len(doc.get("shards", []))
    return out
