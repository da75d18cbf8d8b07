"""Injecting one fault into a running fleet and timing how long its shards take to recover.

- ``kill``: SIGKILL a worker that holds shards, start a replacement;
- ``pause``: SIGSTOP a worker that holds shards until others have taken them over (so past
  its lease TTL), then SIGCONT it: it wakes up as a zombie and must write nothing stale;
- ``scale``: start one or two workers, wait until the shards have moved to them, then
  SIGTERM as many workers that hold shards; each moved shard's time without an owner, from
  its release to its next acquisition, is kept for both steps (``eventfleet.local.moves``);
- ``redis_restart``: stop redis-server (SIGTERM and SIGKILL alternately) and start it on the
  same data (appendonly yes, appendfsync always);
- ``client_kill``: CLIENT KILL every worker and producer connection;
- ``producer_rerun``: SIGKILL ``produce file --source`` while it publishes, then run it again
  (``eventfleet.chaos.rerun``);
- ``hostile``: forged, malformed and overflowing entries through the producer's one write
  (``eventfleet.chaos.hostile``); they must change nothing but dead letters.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from eventfleet.chaos import hostile
from eventfleet.chaos.config import POLL_S, PRODUCER_NAME, RECOVERY_DEADLINE_S, ChaosError
from eventfleet.chaos.observe import Observer, View, holders
from eventfleet.chaos.paced import PacedProducer
from eventfleet.chaos.rerun import FileRun, kill_and_rerun
from eventfleet.local.fleet import LocalFleet, WorkerProc
from eventfleet.local.moves import moves, releases
from eventfleet.local.redisserver import LocalRedis


@dataclass
class FaultRecord:
    kind: str
    at_s: float
    victims: list[str]
    shards: list[str]
    producer_active: bool
    backlog: int
    """Entries unacked or not yet delivered on the affected shards at the fault (counted with
    XRANGE, at most BACKLOG_CAP undelivered per shard: XINFO's lag is unknown after a Redis
    restart)."""
    recovery_s: list[float] = field(default_factory=list)
    unrecovered: list[str] = field(default_factory=list)
    note: str = ""
    redis_down_s: float | None = None
    """``redis_restart``: from the stop to redis-server answering again (AOF loaded), part of
    each recovery time; the rest is the workers'."""
    unowned_up_s: list[float] = field(default_factory=list)
    """``scale``: per shard moved to the workers added, seconds from its release by the old
    owner to its acquisition by the new one."""
    unowned_down_s: list[float] = field(default_factory=list)
    """``scale``: the same for the shards of the workers stopped with SIGTERM."""

    @property
    def in_flight(self) -> bool:
        return bool(self.shards) and self.producer_active


class FaultInjector:
    """Strikes the fleet one fault at a time and keeps track of the workers it stopped (and of
    those that exited by themselves, which are replaced)."""

    def __init__(
        self,
        observer: Observer,
        fleet: LocalFleet,
        producer: PacedProducer,
        local: LocalRedis | None,
        rng: random.Random,
        t_start: float,
        say: Callable[[str], None],
    ) -> None:
        self.observer = observer
        self.fleet = fleet
        self.producer = producer
        self.local = local
        self.rng = rng
        self.t_start = t_start
        self.say = say
        self.stopped_on_purpose: set[str] = set()
        self.unexpected: list[dict[str, Any]] = []
        self.restarts = 0
        self.files: list[FileRun] = []
        """The ``producer_rerun`` faults' files, for the report's exactly-once count."""
        self.workdir = fleet.logdir.parent
        self.hostile_strikes = 0
        self.producer_env: dict[str, str] = {}
        """How ``producer_rerun``'s processes log in (the shipped producer user)."""
        self.producer_r: Any = None
        """The producer's connection: ``hostile`` pushes what its credentials can."""
        self.root_r: Any = None
        """A superuser connection for ``client_kill`` (CLIENT KILL), when there is one."""
        self._hostile: list[tuple[str, bytes]] = []
        self.on_strike: Callable[[str], None] = lambda kind: None
        """Called right before each fault strikes (``--reshard`` notes whether a step ran)."""

    def live(self) -> list[WorkerProc]:
        return [w for w in self.fleet.live() if w.worker_id not in self.stopped_on_purpose]

    def check_exits(self) -> None:
        for w in self.fleet.workers:
            code = w.proc.poll()
            if code is None or w.worker_id in self.stopped_on_purpose:
                continue
            self.stopped_on_purpose.add(w.worker_id)
            tail = w.log_path.read_text(errors="replace")[-1500:]
            self.unexpected.append({"worker": w.worker_id, "exit": code, "log_tail": tail})
            self.say(f"worker {w.worker_id} exited by itself ({code}); starting a replacement")
            self.fleet.start()

    def _pick_holders(self, k: int) -> tuple[list[WorkerProc], dict[str, View]]:
        """Up to ``k`` live workers that hold shards now (waits until one does)."""
        deadline = time.monotonic() + RECOVERY_DEADLINE_S
        while True:
            view = self.observer.view()
            held = holders(view)
            cands = [w for w in self.live() if held.get(w.worker_id)]
            if cands or time.monotonic() > deadline:
                self.rng.shuffle(cands)
                return cands[:k], view
            time.sleep(POLL_S)

    def inject(self, kind: str, at_once: bool = False) -> FaultRecord:
        """Strike one fault of ``kind`` and wait for its recovery; ``at_once``: without
        waiting for the producer's next burst first (``--reshard``: at a step's start)."""
        self.check_exits()
        k = 1 if kind != "scale" else self.rng.choice((1, 2))
        added: list[WorkerProc] = []
        settled = True
        t_up = time.time()
        if kind == "scale":
            added = [self.fleet.start() for _ in range(k)]
            settled = self.observer.wait_settled(w.worker_id for w in added)
        # Strike right after a burst is published, while the workers are applying it.
        if not at_once:
            self.producer.chunk_sent.clear()
            self.producer.chunk_sent.wait(timeout=2.0)
        victims, view = self._pick_holders(k)
        if kind == "hostile":
            victims = []
            self._hostile = hostile.hostile_batch(
                self.observer.counts, self.rng, self.hostile_strikes
            )
            self.hostile_strikes += 1
        rec = self._record(kind, victims, view)
        if added:
            rec.note = f"added {', '.join(w.worker_id for w in added)}"
            rec.note += "" if settled else " (shards not moved to them within 60 s)"
        before = {s: view[s] for s in rec.shards}
        if added:
            rec.unowned_up_s = [m.unowned_s for m in self._moves(t_up)]
        t_down = time.time()
        t0 = time.monotonic()
        self.on_strike(kind)
        self._strike(kind, victims, rec)
        by_worker = kind in ("kill", "pause", "scale")
        rec.recovery_s, rec.unrecovered = self.observer.await_recovery(t0, before, by_worker)
        if kind == "pause":
            rec.note = f"paused {time.monotonic() - t0:.2f}s"
            for w in victims:
                self.fleet.resume(w)
        if kind == "scale":
            for w in victims:
                code = w.proc.wait(timeout=60)
                rec.note += f"; {w.worker_id} exited {code} on SIGTERM"
            gone = {w.worker_id for w in victims}
            rec.unowned_down_s = [m.unowned_s for m in self._moves(t_down) if m.source in gone]
        return rec

    def _moves(self, since: float) -> list[Any]:
        """The shards handed over since ``since`` (wall time) and acquired again, once every
        new owner has logged its takeover (at most a few seconds)."""
        logs = [(w.worker_id, w.log_path) for w in self.fleet.workers]
        deadline = time.monotonic() + 5.0
        found = moves(logs, since)
        while len(found) < releases(logs, since) and time.monotonic() < deadline:
            time.sleep(POLL_S)
            found = moves(logs, since)
        return found

    def _record(self, kind: str, victims: list[WorkerProc], view: dict[str, View]) -> FaultRecord:
        """The fault about to strike: its victims, the shards it hits and their backlog."""
        held = holders(view)
        if kind == "producer_rerun":  # a file of top-ups reaches every user shard
            shards = sorted(s for s in view if s.startswith("u"))
            names = ["produce file --source"]
        elif kind in ("redis_restart", "client_kill"):
            shards = sorted(s for s, v in view.items() if v.owner)
            names = sorted(held)
        elif kind == "hostile":
            shards = sorted({s for s, _text in self._hostile})
            names = ["hostile-writer"]
        else:
            shards = sorted(s for w in victims for s in held.get(w.worker_id, []))
            names = [w.worker_id for w in victims]
        return FaultRecord(
            kind,
            round(time.monotonic() - self.t_start, 3),
            names,
            shards,
            self.producer.active(),
            self.observer.backlog(view, shards),
        )

    def _strike(self, kind: str, victims: list[WorkerProc], rec: FaultRecord) -> None:
        if kind == "kill":
            for w in victims:
                self.stopped_on_purpose.add(w.worker_id)
                self.fleet.kill(w)
            self.fleet.start()
        elif kind == "pause":
            for w in victims:
                self.fleet.pause(w)
        elif kind == "scale":
            for w in victims:
                self.stopped_on_purpose.add(w.worker_id)
                w.proc.send_signal(15)
        elif kind == "redis_restart":
            self._restart_redis(rec)
        elif kind == "client_kill":
            rec.note = f"killed {self._client_kill()} connections"
        elif kind == "producer_rerun":
            obs = self.observer
            run, rec.note = kill_and_rerun(
                self.fleet.redis_url, obs.keys.ns, self.workdir, len(self.files), self.rng,
                obs.counts, self.producer_env,
            )  # fmt: skip
            self.files.append(run)
        elif kind == "hostile":
            r, keys = self.producer_r or self.observer.r, self.observer.keys
            self.observer.call(lambda: hostile.push(r, keys, self._hostile), "hostile")
            rec.note = f"{len(self._hostile)} hostile entries, {hostile.DEAD_PER_STRIKE} to die"

    def _restart_redis(self, rec: FaultRecord) -> None:
        if self.local is None:
            raise ChaosError("redis_restart needs the throwaway redis-server")
        hard = self.restarts % 2 == 1
        self.restarts += 1
        t0 = time.monotonic()
        self.local.stop(kill=hard)
        stopped = time.monotonic()
        self.local.start(timeout=120.0)
        up = time.monotonic()
        rec.redis_down_s = round(up - t0, 4)
        rec.note = (
            f"redis-server stopped with {'SIGKILL' if hard else 'SIGTERM'} in "
            f"{stopped - t0:.2f}s and answered again {up - stopped:.2f}s later"
        )

    def _client_kill(self) -> int:
        r = self.root_r or self.observer.r
        ours = {w.worker_id for w in self.fleet.workers} | {PRODUCER_NAME}
        clients: Any = self.observer.call(r.client_list, "client_list")
        targets = [str(c["id"]) for c in clients if c.get("name") in ours]

        def kill() -> int:
            return sum(int(r.client_kill_filter(_id=cid)) for cid in targets)

        return int(self.observer.call(kill, "client_kill"))
