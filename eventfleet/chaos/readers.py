"""Readers during a chaos run: clients that write a top-up and read the balance back with the
receipt (``client.balance(user, after=receipt)``), while the faults strike; then every read
is held to the log.

A read is right when its value is one the user's balance took in the fold of the log at or
after the receipt's entry (never older than what the reader wrote) and no later than the
read's end (never from the future: the entry that gave the value existed by then, by Redis'
entry-id clock, with ``SKEW_MS`` for the clocks of this host and Redis).
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import redis

from eventfleet.client import Client, EventfleetError, Receipt
from eventfleet.ledger.rules import StepResult
from eventfleet.ledger.shards import ShardCounts, user_shard
from eventfleet.ledger.state import ShardState
from eventfleet.store import ids
from eventfleet.store.fold import fold
from eventfleet.store.keys import Keys
from eventfleet.store.shardreads import poison_ids

SKEW_MS = 1000
"""How far this host's clock may be ahead of Redis' for the no-value-from-the-future check."""
READ_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Read:
    user: int
    receipt: Receipt
    value: int
    done_ms: int


@dataclass
class ReadCheck:
    reads: int = 0
    wrong: list[str] = field(default_factory=list)
    errors: int = 0
    """Reads that raised (Redis restarting: the reader tried again)."""


class ClientLoops(threading.Thread):
    """``n`` loops on one client each (``connect``), until ``stop`` is set: ``loop`` is what
    each does with its client; a client that cannot connect is reported in ``error``."""

    def __init__(self, name: str, connect: Callable[[], Client], n: int, seed: int) -> None:
        super().__init__(name=name, daemon=True)
        self.connect = connect
        self.n = n
        self.rng = random.Random(seed)
        self.stop = threading.Event()
        self.errors = 0
        """Calls that raised (Redis restarting, a wait timed out): counted, then retried."""
        self.error: str | None = None
        self._lock = threading.Lock()

    def run(self) -> None:
        loops = [threading.Thread(target=self._loop, args=(i,), daemon=True) for i in range(self.n)]
        for t in loops:
            t.start()
        for t in loops:
            t.join()

    def _loop(self, i: int) -> None:
        rng = random.Random(self.rng.random() + i)
        try:
            client = self.connect()
        except Exception as exc:  # reported, not raised: the run must still clean up
            self.error = f"{type(exc).__name__}: {exc}"
            return
        try:
            self.loop(client, rng, i)
        finally:
            client.close()

    def loop(self, client: Client, rng: random.Random, i: int) -> None:
        raise NotImplementedError

    def failed(self) -> None:
        """A call raised: count it, pause a little (Redis restarting)."""
        with self._lock:
            self.errors += 1
        self.stop.wait(0.05)


class Readers(ClientLoops):
    """``n`` loops of write-then-read on one client each, until ``stop`` is set."""

    def __init__(
        self, connect: Callable[[], Client], users: int, n: int = 2, seed: int = 0
    ) -> None:
        super().__init__("chaos-readers", connect, n, seed)
        self.users = users
        self.reads: list[Read] = []

    def loop(self, client: Client, rng: random.Random, i: int) -> None:
        pending: Receipt | None = None
        user = 0
        while not self.stop.is_set():
            try:
                if pending is None:
                    user = rng.randint(1, self.users)
                    pending = client.topup(user=user, amount=1)
                value = client.balance(user, after=pending, timeout=READ_TIMEOUT_S)
            except EventfleetError:
                self.failed()  # the same receipt is read again
                continue
            with self._lock:
                self.reads.append(Read(user, pending, value, int(time.time() * 1000)))
            pending = None


def check_reads(
    r: redis.Redis, keys: Keys, counts: ShardCounts, reads: list[Read], errors: int = 0
) -> ReadCheck:
    """Fold the user shards the reads touched and hold each read to its user's history."""
    out = ReadCheck(reads=len(reads), errors=errors)
    by_shard: dict[str, set[int]] = {}
    for rd in reads:
        by_shard.setdefault(user_shard(rd.user, counts), set()).add(rd.user)
    for shard, users in by_shard.items():
        history, where = _history(r, keys, counts, shard, users)
        for rd in (x for x in reads if x.user in users):
            start = where.get((rd.receipt.source, rd.receipt.seq))
            if start is None:
                out.wrong.append(f"user {rd.user}: receipt {rd.receipt.ref} not in the log")
                continue
            seen = history[rd.user]
            ok = {v for pos, ms, v in seen if pos >= start and ms <= rd.done_ms + SKEW_MS}
            if rd.value not in ok:
                out.wrong.append(
                    f"user {rd.user}: read {rd.value} after {rd.receipt.ref}, "
                    f"the log gives one of {sorted(ok)[:5]}"
                )
    return out


def _history(
    r: redis.Redis, keys: Keys, counts: ShardCounts, shard: str, users: set[int]
) -> tuple[dict[int, list[tuple[int, int, int]]], dict[tuple[str, int], int]]:
    """Per user, ``(position, entry ms, balance)`` each time the balance changed; and the
    position of each (source, seq) applied."""
    state = ShardState(shard)
    history: dict[int, list[tuple[int, int, int]]] = {u: [] for u in users}
    where: dict[tuple[str, int], int] = {}
    pos = 0

    def on_step(eid: str, _raw: bytes | None, res: StepResult) -> None:
        nonlocal pos
        pos += 1
        w = res.wire
        if w is not None and res.kind != "dead":
            where.setdefault((w.source, w.seq), pos)
        for u in users:
            bal = state.balances.get(u)
            if bal is not None and (not history[u] or history[u][-1][2] != bal):
                history[u].append((pos, ids.millis(eid), bal))

    fold(r, keys.events(shard), state, counts, poison_ids(r, keys, shard), on_step=on_step)
    return history, where


__all__ = ["ClientLoops", "Read", "ReadCheck", "Readers", "check_reads"]
