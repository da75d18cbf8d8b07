"""``eventfleet up``: the compose services as local processes (``eventfleet.local.stack``),
watched (``eventfleet.local.watch``), with faults on keys and ``verify`` at the end.

``run`` drives a ``Session`` with a ``View``: the live terminal view (``eventfleet.local.liveview``)
or plain progress lines when there is no terminal.
"""

from __future__ import annotations

import os
import random
import signal
import time
from collections import Counter
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol

from eventfleet.cli.context import Ctx, make_settings
from eventfleet.local.fleet import LocalFleet, WorkerProc
from eventfleet.local.stack import Stack, UpConfig
from eventfleet.local.watch import LogTail, Sample, Sampler
from eventfleet.ops.verify import stream_lengths, verify
from eventfleet.store.connection import TRANSIENT

SAMPLE_S = 0.5
DRAIN_S = 30.0
FAULT_KINDS = ("kill", "add", "stop", "pause")
FLEET_EVENT_NAMES = {
    "handover": "hand-overs",
    "takeover": "take-overs",
    "lease_lost": "leases lost",
    "snapshot": "snapshots",
}
FLEET_EVENTS = tuple(FLEET_EVENT_NAMES)
KEYS_HELP = "k kill a worker (SIGKILL) · a add one · s stop one (SIGTERM) · p pause one · q quit"


@dataclass
class Summary:
    events: int
    events_requested: int | None
    workers: int
    faults: dict[str, int]
    verified: bool
    verify_detail: str
    duration_seconds: float
    outcomes: dict[str, int]
    dead_letters: int
    fleet_events: dict[str, int]
    """Hand-overs, take-overs, leases lost and snapshots, from the workers' logs."""
    idle: bool
    producer_exit: int | None
    producer_said: str
    """The producer's last line of output."""
    producer_stopped: bool
    namespace: str
    redis_url: str
    kept: bool
    """True when the data stays (``--redis``): it can still be inspected."""

    def as_json(self) -> dict[str, Any]:
        return {
            "events": self.events,
            "events_requested": self.events_requested,
            "workers": self.workers,
            "faults": self.faults,
            "verified": self.verified,
            "duration_seconds": round(self.duration_seconds, 3),
            "outcomes": self.outcomes,
            "dead_letters": self.dead_letters,
            "fleet_events": self.fleet_events,
            "idle": self.idle,
            "producer_exit": self.producer_exit,
        }

    @property
    def ok(self) -> bool:
        return self.verified and (self.producer_stopped or self.producer_exit in (0, None))


class View(Protocol):
    """What a ``Session`` shows itself on: the live view, plain lines, or nothing."""

    def keys(self, timeout: float) -> str:
        """Keys pressed within ``timeout`` seconds ('' when none or when there is no terminal)."""

    def show(self, session: Session) -> None: ...

    def progress(self, label: str, total: int) -> AbstractContextManager[Callable[[int], None]]:
        """A progress bar (or nothing) for one long step; yields ``advance(n)``."""


@dataclass
class Verdict:
    ok: bool
    detail: str
    events: int
    """Producer events in the log, each folded by verify."""


def check(ctx: Ctx, advance: Callable[[int], None]) -> Verdict:
    """``eventfleet verify`` in-process: every stream folded again and held to Redis."""
    counts = ctx.counts()
    report = verify(ctx.redis, ctx.keys, counts, on_chunk=advance)
    # A producer numbers its events 1, 2, ... per shard: its watermark on a shard counts them.
    events = sum(
        seq
        for fold in report.folds.values()
        for src, seq in fold.state.watermarks.items()
        if src.startswith("p:")
    )
    if report.ok:
        detail = "state, snapshots and outcomes match the log; invariants hold"
    else:
        j = report.as_json()
        detail = (
            f"{j['mismatches']} mismatches, {j['lost']} lost, {j['duplicates_applied']} "
            f"duplicates applied, {j['invariant_violations']} invariant violations"
        )
        first = report.findings.shown[:1]
        detail += "".join(f"; first: {f.shard} {f.what} {f.kind}: {f.detail}" for f in first)
    if report.unchecked:
        detail += "; not checked: " + "; ".join(report.unchecked)
    return Verdict(report.ok, detail, events)


@dataclass
class WorkerNote:
    paused_until: float | None = None
    stopping: bool = False
    killed: bool = False
    reported: bool = False


class Session:
    """One ``up`` run: its processes, what it watches, and the faults injected into it."""

    def __init__(self, cfg: UpConfig, stack: Stack, view: View) -> None:
        self.cfg = cfg
        self.stack = stack
        self.view = view
        self.started = time.monotonic()
        self.phase = "starting"
        self.faults: Counter[str] = Counter(dict.fromkeys(FAULT_KINDS, 0))
        self.notes: dict[str, WorkerNote] = {}
        self.tail = LogTail()
        self.rng = random.Random(cfg.seed)
        self.expected_orders = cfg.expected_orders
        self.sampler: Sampler | None = None
        self.sample: Sample | None = None
        self.producer_done = False
        self.producer_stopped = False
        """We stopped it (q): its exit status is ours, not a failure."""
        self._ctx: Ctx | None = None

    # ---- starting --------------------------------------------------------------------
    def _enter(self, phase: str) -> None:
        self.phase = phase
        self.view.show(self)

    def start(self) -> None:
        st = self.stack
        cluster = self.cfg.cluster
        self._enter("starting a 3-master Redis Cluster" if cluster else "starting redis-server")
        st.start_redis()
        self._enter("eventfleet init")
        st.init()
        self._ctx = Ctx(make_settings(redis_url=st.url, namespace=st.namespace))
        self.sampler = Sampler(self._ctx.redis, self._ctx.keys, self._ctx.counts())
        self._enter(f"starting {self.cfg.workers} workers and the producer")
        fleet = st.start_fleet(self.cfg.workers)
        for w in fleet.workers:
            self._follow(w)
        st.start_producer()
        self.tail.follow(st.producer_log, "producer")
        self.phase = "running"

    @property
    def fleet(self) -> LocalFleet:
        assert self.stack.fleet is not None, "start() first"
        return self.stack.fleet

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    @staticmethod
    def short(worker_id: str) -> str:
        """``w3`` for our ``w3-<pid>``; other owners (``--redis``) keep their id."""
        head, _, pid = worker_id.rpartition("-")
        return head if head and pid == str(os.getpid()) else worker_id

    def _follow(self, w: WorkerProc) -> None:
        self.notes[w.worker_id] = WorkerNote()
        self.tail.follow(w.log_path, self.short(w.worker_id))

    # ---- watching --------------------------------------------------------------------
    def tick(self) -> Sample | None:
        now = time.monotonic()
        for w in self.fleet.workers:
            note = self.notes[w.worker_id]
            if note.paused_until is not None and now >= note.paused_until and w.alive:
                self.fleet.resume(w)
                note.paused_until = None
                self.tail.note(self.short(w.worker_id), "resume", "SIGCONT: resumed")
            if not w.alive and not note.reported:
                note.reported = True
                if not note.killed:
                    how = "stopped" if note.stopping else "exited"
                    self.tail.note(
                        self.short(w.worker_id), how, f"{how} (exit {w.proc.returncode})"
                    )
        p = self.stack.producer
        done_before_sample = p is not None and p.poll() is not None
        if done_before_sample and not self.producer_done and p is not None:
            self.producer_done = True
            rc = p.returncode
            self.tail.note("producer", "producer", f"finished publishing (exit {rc})")
        self.tail.poll()
        assert self.sampler is not None
        try:
            self.sample = self.sampler.sample()
        except TRANSIENT as exc:
            self.tail.note("up", "redis", f"cannot sample Redis: {type(exc).__name__}")
        return self.sample

    @property
    def finished(self) -> bool:
        """The producer is done and every event it published is applied, saga steps included.

        The producer is checked before the sample is taken, so its last entries are in it.
        """
        return self.producer_done and self.sample is not None and self.sample.idle

    def live_workers(self) -> list[WorkerProc]:
        return [w for w in self.fleet.workers if w.alive]

    def worker_state(self, w: WorkerProc) -> str:
        note = self.notes[w.worker_id]
        if not w.alive:
            return "killed" if note.killed else f"exited {w.proc.returncode}"
        if note.paused_until is not None:
            return f"paused {max(0.0, note.paused_until - time.monotonic()):.1f}s"
        return "stopping" if note.stopping else "running"

    # ---- faults ------------------------------------------------------------------------
    def press(self, key: str) -> None:
        action = {"k": self.kill, "a": self.add, "s": self.stop, "p": self.pause}.get(key.lower())
        if action is not None:
            action()

    def _victim(self, verb: str) -> WorkerProc | None:
        """A random running worker, preferring one that holds shards (a fault that hits)."""
        ready = [
            w
            for w in self.live_workers()
            if self.notes[w.worker_id].paused_until is None and not self.notes[w.worker_id].stopping
        ]
        owners = self.sample.owners() if self.sample else Counter[str]()
        holding = [w for w in ready if owners[w.worker_id]]
        pool = holding or ready
        if not pool:
            self.tail.note("up", "fault", f"no running worker to {verb}")
            return None
        return self.rng.choice(pool)

    def _held(self, w: WorkerProc) -> int:
        return self.sample.owners()[w.worker_id] if self.sample else 0

    def kill(self) -> None:
        w = self._victim("kill")
        if w is None:
            return
        held = self._held(w)
        self.fleet.kill(w)
        self.notes[w.worker_id].killed = True
        self.faults["kill"] += 1
        self.tail.note(self.short(w.worker_id), "fault", f"SIGKILL (held {held} shards)")

    def add(self) -> None:
        w = self.fleet.start()
        self._follow(w)
        self.faults["add"] += 1
        self.tail.note(self.short(w.worker_id), "fault", f"started (pid {w.proc.pid})")

    def stop(self) -> None:
        w = self._victim("stop")
        if w is None:
            return
        w.proc.send_signal(signal.SIGTERM)
        self.notes[w.worker_id].stopping = True
        self.faults["stop"] += 1
        held = self._held(w)
        self.tail.note(self.short(w.worker_id), "fault", f"SIGTERM: draining {held} shards")

    def pause(self) -> None:
        w = self._victim("pause")
        if w is None:
            return
        hold_s = self.cfg.lease_ttl_ms / 1000 + 1.0
        self.fleet.pause(w)
        self.notes[w.worker_id].paused_until = time.monotonic() + hold_s
        self.faults["pause"] += 1
        self.tail.note(
            self.short(w.worker_id),
            "fault",
            f"SIGSTOP for {hold_s:g}s, past its {self.cfg.lease_ttl_ms} ms lease",
        )

    # ---- finishing -----------------------------------------------------------------------
    def finish(self) -> Summary:
        """Producer stopped, backlog drained (bounded), workers SIGTERMed, then verify."""
        if self.sampler is None or self._ctx is None or self.stack.fleet is None:
            return self._summary(False, Verdict(False, "stopped before the fleet started", 0))
        if self.stack.redis_lost():
            return self._without_redis()
        for w in self.live_workers():
            if self.notes[w.worker_id].paused_until is not None:
                self.fleet.resume(w)
                self.notes[w.worker_id].paused_until = None
        if not self.producer_done:
            self._enter("stopping the producer")
            self.producer_stopped = True
            self.stack.stop_producer()
        if not self.finished:
            self._enter("draining the backlog")
        deadline = time.monotonic() + DRAIN_S
        while not self.finished and self.live_workers() and time.monotonic() < deadline:
            time.sleep(SAMPLE_S / 2)
            if self.stack.redis_lost():
                return self._without_redis()
            self.tick()
            self.view.show(self)
        self.tick()
        idle = self.finished
        self._enter("stopping workers (SIGTERM)")
        self.fleet.stop_all(timeout=20)
        self.tick()
        self._enter("verifying")
        try:
            total = stream_lengths(self._ctx.redis, self._ctx.keys, self._ctx.counts())
            with self.view.progress("verifying", total) as advance:
                verdict = check(self._ctx, advance)
        except TRANSIENT as exc:
            verdict = Verdict(False, f"Redis is gone: {type(exc).__name__}", 0)
        self._enter("done")
        return self._summary(idle, verdict)

    def _without_redis(self) -> Summary:
        """Our redis-server exited under us: nothing can drain or be verified."""
        self._enter("redis-server is gone: stopping everything")
        self.stack.stop_producer()
        for w in self.live_workers():
            self.fleet.kill(w)  # a drain could write nothing anyway
        why = (
            "redis-server exited before the end, so nothing could be verified "
            "(a Ctrl-C on the terminal stops it too: quit with q)"
        )
        return self._summary(False, Verdict(False, why, 0))

    def _summary(self, idle: bool, verdict: Verdict) -> Summary:
        p = self.stack.producer
        outcomes = self.sampler.outcomes if self.sampler else Counter[str]()
        return Summary(
            events=verdict.events,
            events_requested=self.cfg.events,
            workers=self.cfg.workers,
            faults=dict(self.faults),
            verified=verdict.ok,
            verify_detail=verdict.detail,
            duration_seconds=self.elapsed,
            outcomes={k: outcomes[k] for k in sorted(outcomes)},
            dead_letters=self.sample.dead_letters if self.sample else 0,
            fleet_events={k: self.tail.counts[k] for k in FLEET_EVENTS},
            idle=idle,
            producer_exit=None if p is None else p.returncode,
            producer_said=self.producer_said(),
            producer_stopped=self.producer_stopped,
            namespace=self.stack.namespace,
            redis_url=self.stack.url,
            kept=self.cfg.redis_url is not None,
        )

    def producer_said(self) -> str:
        try:
            text = self.stack.producer_log.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return (text.strip().splitlines() or [""])[-1][:200]


QUIT_KEYS = frozenset({"q", "Q", "\x03"})


def run(cfg: UpConfig, view: View, *, exit_when_idle: bool) -> Summary:
    """Start everything, watch until q (or idle), then finish; always clean up."""
    stack = Stack(cfg)
    try:
        session = Session(cfg, stack, view)
        try:
            session.start()
            next_sample = 0.0
            while True:
                pressed = view.keys(max(0.0, next_sample - time.monotonic()))
                if any(k in QUIT_KEYS for k in pressed):
                    break
                for k in pressed:
                    session.press(k)
                if pressed or time.monotonic() >= next_sample:
                    if time.monotonic() >= next_sample:
                        session.tick()
                        next_sample = time.monotonic() + SAMPLE_S
                    view.show(session)
                if (exit_when_idle and session.finished) or stack.redis_lost():
                    break
        except KeyboardInterrupt:
            session.tail.note("up", "quit", "interrupted")
        return session.finish()
    finally:
        stack.close()


def summary_lines(s: Summary) -> list[str]:
    """The human summary (``--json`` prints ``Summary.as_json`` instead)."""
    faults = ", ".join(f"{k} {n}" for k, n in s.faults.items() if n) or "none"
    settled = sum(s.outcomes.values())
    kinds = ", ".join(f"{k} {n}" for k, n in s.outcomes.items()) or "none yet"
    requested = f" of {s.events_requested}" if s.events_requested is not None else ""
    lines = [
        f"eventfleet up: {s.duration_seconds:.1f}s, {s.workers} workers at start",
        f"  events:         {s.events}{requested} published"
        + (", all applied" if s.idle else ", the fleet was not idle at the end"),
        f"  orders settled: {settled} ({kinds})",
        f"  dead letters:   {s.dead_letters}",
        f"  faults:         {faults}",
        "  fleet:          "
        + ", ".join(f"{FLEET_EVENT_NAMES[k]} {n}" for k, n in s.fleet_events.items()),
        f"  verify:         {'ok' if s.verified else 'FAILED'}: {s.verify_detail}",
    ]
    if s.producer_exit not in (0, None) and not s.producer_stopped:
        lines.append(f"  producer:       exited {s.producer_exit}: {s.producer_said}")
    if s.kept:
        lines.append(f"  data kept: {s.redis_url} namespace {s.namespace}")
    else:
        lines.append("  redis-server stopped, temp dir removed")
    return lines
