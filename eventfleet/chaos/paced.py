"""``PacedProducer``: publish a workload from a background thread, in chunks, at a pace.

Used by ``eventfleet chaos`` (a rate that adapts so that publishing spans the fault
schedule) and by the fault tests (a fixed rate). With ``learn`` (``chaos --reshard``) it
re-reads the shard counts between chunks as the library's producers do
(``Producer.learn_counts``: every 5 s); with ``follow`` it keeps every (shard, seq) it
stamped, so that each event can be followed to where it was applied, forwarded or not.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable

import redis

from eventfleet.ledger.events import AddItem, Order, Topup
from eventfleet.ledger.shards import ShardCounts, destination
from eventfleet.producer.client import Producer
from eventfleet.store.keys import Keys

FIRST_CHUNK = 25
MIN_CHUNK, MAX_CHUNK = 25, 500


class PacedProducer(threading.Thread):
    """Publishes ``events`` in chunks, waiting after each chunk so that the pace is ``rate``
    events/s. ``rate`` is a number, or a function of how many events were published so far.

    With a fixed ``chunk`` every chunk has that size; without one the first holds 25 events
    and each next one about a quarter second of events at the current rate (25 to 500): each
    burst keeps the workers busy a while. ``stop`` ends it after the current chunk.
    """

    def __init__(
        self,
        client: redis.Redis,
        keys: Keys,
        counts: ShardCounts,
        events: Iterable[Topup | AddItem | Order],
        rate: float | Callable[[int], float],
        chunk: int | None = None,
        name: str = "paced-producer",
        learn: bool = False,
        follow: bool = False,
    ) -> None:
        super().__init__(name=name, daemon=True)
        self.producer = Producer(client, keys, counts)
        self.events = events
        self.rate = rate
        self.chunk = chunk
        self.published = 0
        self.last_send = 0.0
        self.error: str | None = None
        self.stop = threading.Event()
        self.chunk_sent = threading.Event()
        self.learn = learn
        self.follow = follow
        self.sent: dict[str, list[int]] = {}
        """With ``follow``: per shard the seqs stamped for it, in order."""

    @property
    def done(self) -> bool:
        return not self.is_alive()

    def active(self) -> bool:
        """Still publishing: a chunk went out within the last second."""
        return self.is_alive() and time.monotonic() - self.last_send < 1.0

    def run(self) -> None:
        chunk = self.chunk or FIRST_CHUNK
        buf: list[tuple[str, str]] = []
        try:
            for ev in self.events:
                if self.learn and not buf:  # between chunks, never while one is out
                    self.producer.learn_counts()
                buf.append(self._stamp(ev))
                if len(buf) < chunk:
                    continue
                chunk = self._send(buf)
                buf = []
                if self.stop.is_set():
                    return
            if buf:
                self._send(buf)
        except Exception as exc:  # reported, not raised: the caller must still clean up
            self.error = f"{type(exc).__name__}: {str(exc)[:300]}"

    def _stamp(self, ev: Topup | AddItem | Order) -> tuple[str, str]:
        if not self.follow:
            return self.producer.stamp(ev)
        shard = destination(ev, self.producer.counts)
        stamped = self.producer.stamp(ev)
        self.sent.setdefault(shard, []).append(self.producer.seq[shard])
        return stamped

    def current_rate(self) -> float:
        return self.rate(self.published) if callable(self.rate) else self.rate

    def _send(self, buf: list[tuple[str, str]]) -> int:
        """Publish ``buf``, wait out the pace; return the next chunk's size."""
        t0 = time.monotonic()
        self.producer.send(buf)
        self.published += len(buf)
        self.last_send = time.monotonic()
        self.chunk_sent.set()
        rate = self.current_rate()
        self.stop.wait(max(0.0, len(buf) / rate - (self.last_send - t0)))
        return self.chunk or max(MIN_CHUNK, min(MAX_CHUNK, int(rate / 4)))
