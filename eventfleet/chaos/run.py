"""``eventfleet chaos``: run a fleet, publish a seeded workload, inject faults while events
flow, wait until the fleet is idle, then recompute everything with ``verify``.

Faults, one at a time, each chosen while a worker holds shards and the producer publishes:

- ``kill``: SIGKILL a worker that holds shards, start a replacement;
- ``pause``: SIGSTOP a worker that holds shards until others have taken them over (so past
  its lease TTL), then SIGCONT it: it wakes up as a zombie and must write nothing stale;
- ``scale``: start one or two workers, wait until the shards have moved to them, then
  SIGTERM as many workers that hold shards;
- ``redis_restart``: stop redis-server (SIGTERM and SIGKILL alternately) and start it on the
  same data (appendonly yes, appendfsync always);
- ``client_kill`` (not in the default set): CLIENT KILL every worker and producer connection.

After each fault the run waits until every affected shard applies again (a new lease holder
for worker faults, then its group's delivered id advances or it is idle) and records how
long that took. The producer paces itself so that publishing spans the fault schedule.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import statistics
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import redis

from eventfleet.local.fleet import LocalFleet, WorkerProc
from eventfleet.local.redisserver import LocalRedis
from eventfleet.ops.status import wait_idle
from eventfleet.ops.verify import Report, verify
from ledger.shards import ShardCounts
from producer.client import Producer
from producer.workload import mixed
from store import ids, retry
from store.connection import connect
from store.keys import GROUP, Keys
from store.namespace import init_namespace
from store.settings import Settings
from worker.assignment import assign

KINDS = ("kill", "pause", "scale", "redis_restart", "client_kill")
DEFAULT_KINDS = ("kill", "pause", "scale", "redis_restart")
PRODUCER_NAME = "chaos-producer"
# A first guess of how long one fault and its recovery take, before any was measured.
GUESS_S = {"kill": 3.0, "pause": 3.0, "scale": 6.0, "redis_restart": 3.0, "client_kill": 1.5}
RECOVERY_DEADLINE_S = 60.0
POLL_S = 0.02
BACKLOG_CAP = 1000


class ChaosError(RuntimeError):
    """The run could not be carried out (not a verdict on the system under test)."""


@dataclass
class ChaosConfig:
    workers: int = 3
    events: int = 10_000
    seed: int = 1
    faults: tuple[str, ...] = DEFAULT_KINDS
    rounds: int = 3
    """Each round injects every chosen kind once, in a seeded random order."""
    fault_interval: float = 1.0
    """Seconds between one fault's recovery and the next fault."""
    redis_url: str | None = None
    namespace: str | None = None
    user_shards: int = 8
    item_shards: int = 8
    lease_ttl_ms: int = 1500
    snapshot_interval_s: float = 2.0
    max_rate: float = 3000.0
    idle_timeout_s: float = 300.0
    logdir: Path | None = None


@dataclass
class View:
    owner: str | None
    epoch: int
    delivered: str
    last: str
    pending: int
    expires: float
    """Monotonic time the lease runs out (0: no lease); a renewal moves it later."""

    @property
    def idle(self) -> bool:
        return self.pending == 0 and self.delivered == self.last


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

    @property
    def in_flight(self) -> bool:
        return bool(self.shards) and self.producer_active


class PacedProducer(threading.Thread):
    """Publishes the workload in small chunks, at a rate that spans the fault schedule."""

    def __init__(self, r: redis.Redis, keys: Keys, counts: ShardCounts, cfg: ChaosConfig,
                 remaining_s: Callable[[], float]) -> None:  # fmt: skip
        super().__init__(name="chaos-producer", daemon=True)
        self.producer = Producer(r, keys, counts)
        self.cfg = cfg
        self.remaining_s = remaining_s
        self.published = 0
        self.last_send = 0.0
        self.error: str | None = None
        self.stop = threading.Event()
        self.sent = threading.Event()

    @property
    def done(self) -> bool:
        return not self.is_alive()

    def active(self) -> bool:
        return self.is_alive() and time.monotonic() - self.last_send < 1.0

    def run(self) -> None:
        """Bursts of about a quarter second of events: each one keeps workers busy a while."""
        chunk = 25
        buf: list[tuple[str, str]] = []
        try:
            for ev in mixed(self.cfg.events, seed=self.cfg.seed):
                buf.append(self.producer.stamp(ev))
                if len(buf) < chunk:
                    continue
                chunk = self._send(buf)
                buf = []
                if self.stop.is_set():
                    return
            if buf:
                self._send(buf)
        except Exception as exc:  # reported, not raised: the run must still clean up
            self.error = f"{type(exc).__name__}: {str(exc)[:300]}"

    def _send(self, buf: list[tuple[str, str]]) -> int:
        """Publish ``buf``, wait out the pace; return the next chunk's size."""
        t0 = time.monotonic()
        self.producer.send(buf)
        self.published += len(buf)
        self.last_send = time.monotonic()
        self.sent.set()
        left = self.cfg.events - self.published
        budget = self.remaining_s()
        rate = self.cfg.max_rate if budget <= 0 else min(self.cfg.max_rate, left / budget)
        rate = max(rate, 10.0)
        self.stop.wait(max(0.0, len(buf) / rate - (self.last_send - t0)))
        return max(25, min(500, int(rate / 4)))


class Chaos:
    def __init__(self, cfg: ChaosConfig, log: Callable[[str], None] = lambda s: None) -> None:
        self.cfg = cfg
        self.say = log
        self.rng = random.Random(cfg.seed)
        self.keys = Keys(cfg.namespace or f"chaos-{uuid.uuid4().hex[:8]}")
        self.counts = ShardCounts(cfg.user_shards, cfg.item_shards)
        self.local: LocalRedis | None = None
        self.url = cfg.redis_url or ""
        self.plan: list[str] = []
        self.records: list[FaultRecord] = []
        self.unexpected: list[dict[str, Any]] = []
        self.stopped_on_purpose: set[str] = set()
        self.t_start = time.monotonic()

    # ---- helpers over Redis (every read survives a restart) ----------------------------
    def _call(self, fn: Callable[[], Any], op: str) -> Any:
        return retry.call(fn, op, deadline=time.monotonic() + 60.0)

    def view(self) -> dict[str, View]:
        shards = self.counts.all_shards()

        def go() -> list[Any]:
            pipe = self.r.pipeline(transaction=False)
            for s in shards:
                pipe.get(self.keys.lease(s))
                pipe.pttl(self.keys.lease(s))
                pipe.xinfo_groups(self.keys.events(s))
                pipe.xinfo_stream(self.keys.events(s))
            return list(pipe.execute())

        replies = self._call(go, "chaos_view")
        now = time.monotonic()
        out = {}
        for i, s in enumerate(shards):
            lease, pttl, groups, info = replies[4 * i : 4 * i + 4]
            owner, epoch = None, 0
            if lease is not None:
                name, _, ep = ids.text(lease).rpartition(":")
                owner, epoch = name, int(ep)
            g = next(g for g in groups if ids.text(g["name"]) == GROUP)
            delivered, last = ids.text(g["last-delivered-id"]), ids.text(info["last-generated-id"])
            expires = now + int(pttl) / 1000 if int(pttl) > 0 else 0.0
            out[s] = View(owner, epoch, delivered, last, int(g["pending"]), expires)
        return out

    def _holders(self, view: dict[str, View]) -> dict[str, list[str]]:
        held: dict[str, list[str]] = {}
        for s, v in view.items():
            if v.owner:
                held.setdefault(v.owner, []).append(s)
        return held

    def _live(self) -> list[WorkerProc]:
        return [w for w in self.fleet.live() if w.worker_id not in self.stopped_on_purpose]

    def _pick_holders(self, k: int) -> tuple[list[WorkerProc], dict[str, View]]:
        """Up to ``k`` live workers that hold shards now (waits until one does)."""
        deadline = time.monotonic() + RECOVERY_DEADLINE_S
        while True:
            view = self.view()
            held = self._holders(view)
            cands = [w for w in self._live() if held.get(w.worker_id)]
            if cands or time.monotonic() > deadline:
                self.rng.shuffle(cands)
                return cands[:k], view
            time.sleep(POLL_S)

    def _check_exits(self) -> None:
        for w in self.fleet.workers:
            code = w.proc.poll()
            if code is None or w.worker_id in self.stopped_on_purpose:
                continue
            self.stopped_on_purpose.add(w.worker_id)
            tail = w.log_path.read_text(errors="replace")[-1500:]
            self.unexpected.append({"worker": w.worker_id, "exit": code, "log_tail": tail})
            self.say(f"worker {w.worker_id} exited by itself ({code}); starting a replacement")
            self.fleet.start()

    # ---- one fault ---------------------------------------------------------------------
    def inject(self, kind: str) -> FaultRecord:
        self._check_exits()
        k = 1 if kind != "scale" else self.rng.choice((1, 2))
        added: list[WorkerProc] = []
        settled = True
        if kind == "scale":
            added = [self.fleet.start() for _ in range(k)]
            settled = self._wait_settled(added)
        # Strike right after a burst is published, while the workers are applying it.
        self.producer.sent.clear()
        self.producer.sent.wait(timeout=2.0)
        victims, view = self._pick_holders(k)
        held = self._holders(view)
        if kind in ("redis_restart", "client_kill"):
            shards = sorted(s for s, v in view.items() if v.owner)
            names = sorted(held)
        else:
            shards = sorted(s for w in victims for s in held.get(w.worker_id, []))
            names = [w.worker_id for w in victims]
        rec = FaultRecord(
            kind,
            round(time.monotonic() - self.t_start, 3),
            names,
            shards,
            self.producer.active(),
            self._backlog(view, shards),
        )
        if added:
            rec.note = f"added {', '.join(w.worker_id for w in added)}"
            rec.note += "" if settled else " (shards not moved to them within 60 s)"
        before = {s: view[s] for s in shards}
        t0 = time.monotonic()
        by_worker = kind in ("kill", "pause", "scale")
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
        self._await_recovery(rec, t0, before, by_worker)
        if kind == "pause":
            rec.note = f"paused {time.monotonic() - t0:.2f}s"
            for w in victims:
                self.fleet.resume(w)
        if kind == "scale":
            for w in victims:
                code = w.proc.wait(timeout=60)
                rec.note += f"; {w.worker_id} exited {code} on SIGTERM"
        return rec

    def _backlog(self, view: dict[str, View], shards: list[str]) -> int:
        def go() -> list[Any]:
            pipe = self.r.pipeline(transaction=False)
            for s in shards:
                lo = f"({view[s].delivered}"
                pipe.xrange(self.keys.events(s), min=lo, max=view[s].last, count=BACKLOG_CAP)
            return list(pipe.execute())

        undelivered = self._call(go, "chaos_backlog")
        return sum(view[s].pending + len(u) for s, u in zip(shards, undelivered, strict=True))

    def _wait_settled(self, workers: list[WorkerProc]) -> bool:
        """Until ``workers`` have joined and every shard is held by its rendezvous target
        (a new worker may win no shard at all: that is settled too)."""
        deadline = time.monotonic() + RECOVERY_DEADLINE_S
        want = {w.worker_id for w in workers}
        while time.monotonic() < deadline:
            raw: Any = self._call(lambda: self.r.zrange(self.keys.workers, 0, -1), "members")
            members = {ids.text(m) for m in raw}
            if want <= members:
                target = assign(self.counts.all_shards(), members)
                view = self.view()
                if all(view[s].owner == owner for s, owner in target.items()):
                    return True
            time.sleep(POLL_S)
        return False

    def _restart_redis(self, rec: FaultRecord) -> None:
        if self.local is None:
            raise ChaosError("redis_restart needs the throwaway redis-server")
        hard = sum(1 for r in self.records if r.kind == "redis_restart") % 2 == 1
        self.local.stop(kill=hard)
        self.local.start(timeout=120.0)
        rec.note = f"redis-server stopped with {'SIGKILL' if hard else 'SIGTERM'} and restarted"

    def _client_kill(self) -> int:
        ours = {w.worker_id for w in self.fleet.workers} | {PRODUCER_NAME}
        clients: Any = self._call(self.r.client_list, "client_list")
        targets = [str(c["id"]) for c in clients if c.get("name") in ours]

        def kill() -> int:
            return sum(int(self.r.client_kill_filter(_id=cid)) for cid in targets)

        return int(self._call(kill, "client_kill"))

    def _await_recovery(
        self, rec: FaultRecord, t0: float, before: dict[str, View], by_worker: bool
    ) -> None:
        waiting = dict(before)
        while waiting and time.monotonic() - t0 < RECOVERY_DEADLINE_S:
            view = self.view()
            now = time.monotonic()
            for s, old in list(waiting.items()):
                v = view[s]
                if v.owner is None or v.epoch < old.epoch:
                    continue
                # worker faults: a new holder; Redis faults: a holder that renewed since
                if v.epoch == old.epoch and (by_worker or v.expires <= old.expires + 0.05):
                    continue
                if v.idle or ids.after(v.delivered, old.delivered):
                    rec.recovery_s.append(round(now - t0, 4))
                    del waiting[s]
            if waiting:
                time.sleep(POLL_S)
        rec.unrecovered = sorted(waiting)

    # ---- the run -----------------------------------------------------------------------
    def remaining_s(self) -> float:
        done = len(self.records)
        left = self.plan[done:]
        if not left:
            return 0.0
        if done:
            guess = (time.monotonic() - self.t_faults) / done * len(left)
        else:
            guess = sum(GUESS_S[k] + self.cfg.fault_interval for k in left)
        return 1.2 * guess

    def run(self) -> dict[str, Any]:
        cfg = self.cfg
        own_logs = cfg.logdir is None
        logdir = cfg.logdir or Path(tempfile.mkdtemp(prefix="eventfleet-chaos-"))
        if cfg.redis_url is None:
            self.local = LocalRedis(workdir=logdir / "redis")
            (logdir / "redis").mkdir(parents=True, exist_ok=True)
            self.local.start()
            self.url = self.local.url
        self.r = connect(Settings(redis_url=self.url), timeout=10)  # a cluster node works too
        self.fleet = LocalFleet(self.url, self.keys.ns, logdir / "workers", env={
            "EVENTFLEET_LEASE_TTL_MS": str(cfg.lease_ttl_ms),
            "EVENTFLEET_SNAPSHOT_INTERVAL_S": str(cfg.snapshot_interval_s),
            "EVENTFLEET_LOG_LEVEL": "info",
        })  # fmt: skip
        kinds = list(cfg.faults)
        self.plan = [k for _ in range(cfg.rounds) for k in self.rng.sample(kinds, len(kinds))]
        report: dict[str, Any] = {}
        try:
            report = self._run()
        finally:
            for w in self.fleet.workers:
                if w.alive:
                    self.fleet.resume(w)
            self.fleet.stop_all(timeout=30)
            self.r.close()
            if self.local is not None:
                self.local.stop()
        if own_logs and report.get("ok"):
            shutil.rmtree(logdir, ignore_errors=True)
        else:
            report["logdir"] = str(logdir)
        return report

    def _run(self) -> dict[str, Any]:
        cfg = self.cfg
        init_namespace(self.r, self.keys, self.counts)
        for _ in range(cfg.workers):
            self.fleet.start()
        self._wait_all_owned()
        prod_r = connect(Settings(redis_url=self.url), timeout=10, name=PRODUCER_NAME)
        self.t_faults = time.monotonic()
        self.producer = PacedProducer(prod_r, self.keys, self.counts, cfg, self.remaining_s)
        self.producer.start()
        while self.producer.published == 0 and self.producer.is_alive():
            time.sleep(POLL_S)
        for kind in self.plan:
            rec = self.inject(kind)
            self.records.append(rec)
            self.say(
                f"{kind:<13} on {','.join(rec.victims)[:40]:<40} shards {len(rec.shards):>2} "
                f"recovered in {max(rec.recovery_s, default=0):.2f}s  "
                f"published {self.producer.published}/{cfg.events}"
            )
            self.producer.stop.wait(cfg.fault_interval)
        self.producer.join()
        prod_r.close()
        self._check_exits()
        idle = wait_idle(self.r, self.keys, self.counts, cfg.idle_timeout_s)
        stop_codes = self._stop_fleet()
        result = verify(self.r, self.keys, self.counts)
        return self._report(result, idle, stop_codes)

    def _wait_all_owned(self) -> None:
        deadline = time.monotonic() + RECOVERY_DEADLINE_S
        while not all(v.owner for v in self.view().values()):
            if time.monotonic() > deadline:
                raise ChaosError("the workers did not take every shard within 60 s")
            time.sleep(POLL_S)

    def _stop_fleet(self) -> dict[str, int]:
        live = self._live()
        self.stopped_on_purpose.update(w.worker_id for w in live)
        self.fleet.stop_all(timeout=30)
        return {w.worker_id: int(w.proc.returncode or 0) for w in live}

    def _report(self, result: Report, idle: bool, stop_codes: dict[str, int]) -> dict[str, Any]:
        lost = result.count("lost")
        missing = self._producer_shortfall(result)
        recs = self.records
        samples = [s for r in recs for s in r.recovery_s]
        replayed, errors = self._scan_logs()
        problems = []
        if not idle:
            problems.append(f"the fleet was not idle {self.cfg.idle_timeout_s:g}s after the run")
        if self.producer.error:
            problems.append(f"the producer failed: {self.producer.error}")
        if missing:
            problems.append(f"{missing} published events never applied")
        if self.unexpected:
            problems.append(f"{len(self.unexpected)} workers exited by themselves")
        unrecovered = sum(len(r.unrecovered) for r in recs)
        if unrecovered:
            problems.append(f"{unrecovered} shards did not apply again within 60 s of a fault")
        if any(stop_codes.values()):
            problems.append(f"workers exited non-zero on the final SIGTERM: {stop_codes}")
        faults = Counter(r.kind for r in recs)
        doc: dict[str, Any] = {
            "events": self.cfg.events,
            "published": self.producer.published,
            "faults": {k: faults.get(k, 0) for k in KINDS if k in DEFAULT_KINDS or faults[k]},
            "faults_total": len(recs),
            "faults_in_flight": sum(1 for r in recs if r.in_flight),
            "faults_with_backlog": sum(1 for r in recs if r.backlog > 0),
            "mismatches": result.count("mismatch"),
            "invariant_violations": result.count("invariant"),
            "duplicates_applied": result.count("duplicate"),
            "lost": lost + missing,
            "dead_letters": result.totals.get("dead_letters", 0),
            "replayed_entries": replayed,
            "recovery_seconds": {
                "p50": round(statistics.median(samples), 3) if samples else None,
                "max": round(max(samples), 3) if samples else None,
                "samples": len(samples),
            },
            "duration_seconds": round(time.monotonic() - self.t_start, 1),
            "ok": False,
            "problems": problems,
            "outcomes": result.totals.get("outcomes", {}),
            "entries_folded": result.totals.get("entries", 0),
            "worker_errors": errors,
            "unexpected_exits": self.unexpected,
            "verify": {
                "quiescent": result.quiescent,
                "findings": [vars(f) for f in result.findings.shown[:50]],
                "unchecked": result.unchecked,
            },
            "settings": {
                "workers": self.cfg.workers,
                "seed": self.cfg.seed,
                "rounds": self.cfg.rounds,
                "fault_interval_s": self.cfg.fault_interval,
                "lease_ttl_ms": self.cfg.lease_ttl_ms,
                "snapshot_interval_s": self.cfg.snapshot_interval_s,
                "user_shards": self.counts.users,
                "item_shards": self.counts.items,
                "cpus": os.cpu_count(),
            },
            "fault_log": [asdict(r) | {"in_flight": r.in_flight} for r in recs],
        }
        verdict = ("mismatches", "invariant_violations", "duplicates_applied", "lost")
        doc["ok"] = not problems and not any(doc[k] for k in verdict)
        return doc

    def _producer_shortfall(self, result: Report) -> int:
        """Events the producer published (per shard, by its seq) that no fold applied."""
        src = self.producer.producer.source
        short = 0
        for shard, sent in self.producer.producer.seq.items():
            fold = result.folds.get(shard)
            if fold is None:
                continue
            took = fold.applied_by(src) + len(fold.dead_seqs.get(src, ()))
            short += max(0, sent - took)
        return short

    def _scan_logs(self) -> tuple[int, int]:
        """Entries replayed on takeovers (``lease_acquired`` lines) and error lines."""
        replayed = errors = 0
        for w in self.fleet.workers:
            for line in w.log_path.read_text(errors="replace").splitlines():
                try:
                    doc = json.loads(line)
                except ValueError:
                    errors += line.startswith("Traceback")
                    continue
                if not isinstance(doc, dict):
                    continue
                if doc.get("event") == "lease_acquired":
                    replayed += int(doc.get("replayed", 0))
                errors += doc.get("level") == "error"
        return replayed, errors


def run_chaos(cfg: ChaosConfig, log: Callable[[str], None] = lambda s: None) -> dict[str, Any]:
    if cfg.redis_url and {"redis_restart"} & set(cfg.faults):
        raise ChaosError(
            "redis_restart needs the throwaway redis-server: with --redis, pass --faults "
            "without it (for example kill,pause,scale)"
        )
    if cfg.workers < 1 or cfg.events < 1 or cfg.rounds < 1:
        raise ChaosError("--workers, --events and --rounds must be at least 1")
    return Chaos(cfg, log).run()
