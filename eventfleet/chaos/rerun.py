"""The ``producer_rerun`` fault: ``eventfleet produce file --source NAME`` SIGKILLed while it
publishes, then run again to the end, as an operator would after a crash.

Each fault writes its own seeded file of top-ups and uses its own source name, so the report
can hold every line to exactly once: per destination shard, the line numbers (the source's
seqs) must all be applied or dead-lettered by the fold, none twice (``verify`` counts a
second application as a duplicate).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from eventfleet.ledger.events import Topup
from eventfleet.ledger.shards import ShardCounts, destination

LINES = 3000
RERUN_TIMEOUT_S = 120.0


@dataclass
class FileRun:
    """One killed-and-re-run file: its source and, per shard, the line numbers sent there."""

    source: str
    lines: dict[str, list[int]] = field(default_factory=dict)
    error: str | None = None


def write_file(path: Path, rng: random.Random, counts: ShardCounts) -> dict[str, list[int]]:
    """A file of ``LINES`` top-ups; returns the line numbers per destination shard."""
    per_shard: dict[str, list[int]] = {}
    with path.open("w") as out:
        for lineno in range(1, LINES + 1):
            ev = Topup(user_id=rng.randint(1, 500), amount=rng.randint(1, 900))
            out.write(json.dumps({"type": "topup", "user_id": ev.user_id, "amount": ev.amount}))
            out.write("\n")
            per_shard.setdefault(destination(ev, counts), []).append(lineno)
    return per_shard


def kill_and_rerun(
    url: str,
    namespace: str,
    workdir: Path,
    n: int,
    rng: random.Random,
    counts: ShardCounts,
    login: dict[str, str] | None = None,
) -> tuple[FileRun, str]:
    """Write file ``n``, start publishing it, SIGKILL the process after a seeded delay, then
    publish it again to the end (``login``: the environment that logs in as the producer).
    Returns the run and a note for the fault log."""
    path = workdir / f"rerun-{n}.jsonl"
    run = FileRun(f"p:chaos-file-{n}", write_file(path, rng, counts))
    command = [sys.executable, "-m", "eventfleet", "produce", "file", str(path),
               "--source", run.source[2:]]  # fmt: skip
    env = {**os.environ, "REDIS_URL": url, "EVENTFLEET_NAMESPACE": namespace, **(login or {})}
    delay = rng.uniform(0.3, 2.5)  # Python starts in ~0.5 s; publishing takes about as long
    first = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        first.wait(timeout=delay)
        how = f"finished before the SIGKILL at {delay:.2f}s"
    except subprocess.TimeoutExpired:
        first.send_signal(signal.SIGKILL)
        first.wait()
        how = f"SIGKILLed after {delay:.2f}s"
    t0 = time.monotonic()
    again = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=RERUN_TIMEOUT_S, check=False
    )
    if again.returncode != 0:
        run.error = f"re-run exited {again.returncode}: {again.stderr.strip()[-300:]}"
    return run, f"{run.source}: {how}; re-run took {time.monotonic() - t0:.2f}s"


def shortfall(runs: list[FileRun], applied: dict[str, dict[str, set[int]]]) -> int:
    """Lines of the re-run files that no fold applied (or dead-lettered); ``applied`` maps
    shard -> source -> seqs taken."""
    short = 0
    for run in runs:
        for shard, lines in run.lines.items():
            took = applied.get(shard, {}).get(run.source, set())
            short += sum(1 for n in lines if n not in took)
    return short
