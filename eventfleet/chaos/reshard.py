"""``eventfleet chaos --reshard``: the namespace's shard counts grown online, step by step,
while the paced load flows, with faults struck while each step runs.

Each step is run as an operator runs it: ``eventfleet reshard --user-shards U --item-shards I
--wait S`` in a process of its own, logged in as the shipped admin user. A run that fails (its
Redis restarted under it, SIGKILLed, its lease still held by the run it replaces, the
workers not done within its wait) is run again, as a user would, until one exits 0; each run's
exit code and the last line it wrote are kept for the report.

As soon as a step's command has appended every marker it is SIGKILLed (the workers held
still from the moment it recorded its target until then, so that it is killed there every
time, however fast the workers would apply the markers): its lease holds until it lapses and
the re-runs are refused until then, so the step runs at least that long, its children served
and the counts not published yet. Meanwhile ``RESHARD_KINDS`` strike one after the other, in
a seeded order (``kill``, ``pause``, ``redis_restart``, through the run's ``FaultInjector``),
the first at once, while the markers are applied. Each fault notes whether the step was still
running when it struck (the report is not ok otherwise).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eventfleet.chaos.config import RESHARD_KINDS, ChaosError
from eventfleet.chaos.faults import FaultInjector, FaultRecord
from eventfleet.local.fleet import LocalFleet, WorkerProc
from eventfleet.ops.reshard_progress import MARKED, PUBLISHED
from eventfleet.store.keys import Keys

STEP_DEADLINE_S = 600.0
"""A step that has not completed after this long (every re-run included) ends the run."""
RERUN_PAUSE_S = 2.0


@dataclass
class Attempt:
    exit: int
    took_s: float
    said: str
    """The last line the run wrote on stderr (why it failed)."""
    killed: bool = False
    """SIGKILLed by the chaos run on purpose."""


@dataclass
class ReshardStep:
    """One ``--reshard`` step: its counts, its runs, the faults struck while it ran."""

    users: int
    items: int
    from_users: int
    from_items: int
    began_s: float = 0.0
    """Seconds into the chaos run."""
    duration_s: float | None = None
    attempts: list[Attempt] = field(default_factory=list)
    faults: list[dict[str, Any]] = field(default_factory=list)
    """Per fault: its kind and whether the step was still running when it struck."""
    error: str | None = None

    @property
    def reruns(self) -> int:
        return max(0, len(self.attempts) - 1)

    def as_json(self) -> dict[str, Any]:
        return {
            "from": f"{self.from_users}x{self.from_items}",
            "to": f"{self.users}x{self.items}",
            "began_s": self.began_s,
            "duration_s": self.duration_s,
            "reruns": self.reruns,
            "attempts": [vars(a) for a in self.attempts],
            "faults": self.faults,
            "error": self.error,
        }


class ReshardRunner(threading.Thread):
    """Runs one step's command until a run of it exits 0 (or the step's deadline passes)."""

    def __init__(self, step: ReshardStep, env: dict[str, str], wait_s: float, logdir: Path) -> None:
        super().__init__(name=f"reshard-{step.users}x{step.items}", daemon=True)
        self.step = step
        self.env = {**os.environ, **env}
        self.wait_s = wait_s
        self.logdir = logdir
        self.proc: subprocess.Popen[bytes] | None = None
        self.finished = threading.Event()
        self._kill_next = False
        self._lock = threading.Lock()

    def argv(self) -> list[str]:
        s = self.step
        return [sys.executable, "-m", "eventfleet", "reshard", "--user-shards", str(s.users),
                "--item-shards", str(s.items), "--wait", f"{self.wait_s:g}"]  # fmt: skip

    def running(self) -> bool:
        return not self.finished.is_set()

    def kill(self) -> bool:
        """SIGKILL the run under way (a fault); False when none is."""
        with self._lock:
            if self.proc is None or self.proc.poll() is not None:
                return False
            self._kill_next = True
            self.proc.send_signal(signal.SIGKILL)
            return True

    def run(self) -> None:
        step = self.step
        t0 = time.monotonic()
        try:
            while time.monotonic() - t0 < STEP_DEADLINE_S:
                attempt = self._once(len(step.attempts))
                step.attempts.append(attempt)
                if attempt.exit == 0:
                    step.duration_s = round(time.monotonic() - t0, 3)
                    return
                if attempt.exit == 2 and not attempt.killed:
                    step.error = f"the reshard was refused: {attempt.said}"
                    return
                time.sleep(RERUN_PAUSE_S)
            step.error = f"not completed within {STEP_DEADLINE_S:g} s"
        except Exception as exc:  # reported, not raised: the run must still clean up
            step.error = f"{type(exc).__name__}: {exc}"
        finally:
            self.finished.set()

    def _once(self, n: int) -> Attempt:
        err = self.logdir / f"reshard-{self.step.users}x{self.step.items}-{n}.err"
        t0 = time.monotonic()
        with err.open("wb") as out, self._lock:
            self._kill_next = False
            self.proc = subprocess.Popen(
                self.argv(), env=self.env, stdout=subprocess.DEVNULL, stderr=out
            )
        code = self.proc.wait()
        lines = err.read_text(errors="replace").strip().splitlines()
        said = lines[-1][:300] if lines else ""
        return Attempt(code, round(time.monotonic() - t0, 3), said, self._kill_next)


def recorded_target(r: Any, keys: Keys, call: Callable[[Callable[[], Any], str], Any]) -> str:
    """``reshard_target`` and ``reshard_state`` as meta holds them (``"U,I state"``)."""
    got: Any = call(lambda: r.hmget(keys.meta, ["reshard_target", "reshard_state"]), "meta")
    return " ".join((v or b"").decode() for v in got)


HOLD_POLL_S = 0.005
"""How often the step's start reads meta while it waits for its target and its markers."""


def kill_at_marked(
    runner: ReshardRunner,
    fleet: LocalFleet,
    r: Any,
    keys: Keys,
    call: Callable[[Callable[[], Any], str], Any],
) -> None:
    """Until the step's command has appended every marker, then SIGKILL it (noted in the
    step's faults as ``command_kill``).

    A reshard of a small namespace completes within tens of milliseconds of its markers (the
    workers apply them at their next read), faster than any poll could catch it. So from the
    moment the command records its target (the markers not appended yet) until it is killed,
    every live worker is held still (SIGSTOP, then SIGCONT), and nothing can apply a marker:
    the command is killed at ``marked`` every time, its lease then holds the re-runs off
    until it lapses, and the step's faults strike while the workers apply the markers."""
    want = f"{runner.step.users},{runner.step.items}"
    deadline = time.monotonic() + 120.0
    held: list[WorkerProc] = []
    try:
        while runner.running():
            target, _, state = recorded_target(r, keys, call).partition(" ")
            if target == want:
                if not held:
                    held = fleet.live()
                    for w in held:
                        fleet.pause(w)
                if state in (MARKED, PUBLISHED):
                    runner.step.faults.append(
                        {"kind": "command_kill", "while_running": runner.kill(), "state": state}
                    )
                    return
            if time.monotonic() > deadline:
                raise ChaosError("the reshard command did not append its markers within 120 s")
            time.sleep(HOLD_POLL_S)
    finally:
        for w in held:
            fleet.resume(w)


def run_step(
    runner: ReshardRunner,
    injector: FaultInjector,
    rng: random.Random,
    records: list[FaultRecord],
    say: Callable[[str], None],
) -> None:
    """Start ``runner``'s step, SIGKILL its command once it has appended every marker
    (``kill_at_marked``: its lease then holds until it lapses, and the re-runs wait for it,
    as a user's would, so the step goes on for at least that long), and meanwhile strike
    ``RESHARD_KINDS`` in a seeded order, the first at once (the markers are being applied).
    Then wait until the step completed."""
    step = runner.step
    obs = injector.observer
    runner.start()
    kill_at_marked(runner, injector.fleet, obs.r, obs.keys, obs.call)
    struck: list[dict[str, Any]] = []  # the fault of this step that struck last

    def on_strike(kind: str) -> None:
        struck[:] = [{"kind": kind, "while_running": runner.running()}]
        step.faults.append(struck[0])

    injector.on_strike = on_strike
    try:
        for n, kind in enumerate(rng.sample(RESHARD_KINDS, len(RESHARD_KINDS))):
            rec = injector.inject(kind, at_once=n == 0)
            records.append(rec)
            struck[0]["recovery_s"] = max(rec.recovery_s, default=None)
            say(f"reshard {step.users}x{step.items}: {kind} recovered in "
                f"{max(rec.recovery_s, default=0):.2f}s, the reshard "
                f"{'still running' if runner.running() else 'done'}")  # fmt: skip
    finally:
        injector.on_strike = lambda kind: None
    runner.join(STEP_DEADLINE_S)
    say(f"reshard {step.users}x{step.items}: done in {step.duration_s}s after "
        f"{step.reruns} re-runs{'; ' + step.error if step.error else ''}")  # fmt: skip


def step_problems(steps: list[ReshardStep]) -> list[str]:
    """What keeps the report from being ok: a step not completed, or one of its faults that
    struck after it completed."""
    out = []
    for s in steps:
        name = f"reshard {s.from_users}x{s.from_items} -> {s.users}x{s.items}"
        if s.error or s.duration_s is None:
            out.append(f"{name} did not complete: {s.error}")
        late = [
            f["kind"] for f in s.faults if f["kind"] in RESHARD_KINDS and not f["while_running"]
        ]
        if late:
            out.append(f"{name}: {', '.join(late)} struck after it completed")
    return out
