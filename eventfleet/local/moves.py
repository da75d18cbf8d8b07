"""How long each shard moved on purpose stayed without an owner, from the workers' logs.

A planned move is a ``handed_over`` line (its lease released after the final snapshot) and
the next ``lease_acquired`` line of that shard with a higher epoch, in any worker's log. Per
move: *unowned*, from the release to the new owner's acquisition (``since_acquire_s`` before
its line: the acquisition's send), and *until ready*, from the release to the end of the new
owner's takeover, after which its next batch reads the shard. Used by ``eventfleet bench``
(scenario o), ``eventfleet chaos`` (the ``scale`` fault) and the tests.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import statistics
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Move:
    shard: str
    source: str
    target: str
    epoch: int
    """The new owner's epoch."""
    released: float
    """Wall time (s) of the release."""
    unowned_s: float
    ready_s: float
    warm: bool


def _wall(doc: dict[str, Any]) -> float:
    return datetime.fromisoformat(str(doc["timestamp"]).replace("Z", "+00:00")).timestamp()


def _events(path: Path, names: tuple[str, ...]) -> list[dict[str, Any]]:
    out = []
    with contextlib.suppress(OSError), open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if not line.startswith("{") or not any(f'"{n}"' in line for n in names):
                continue
            with contextlib.suppress(ValueError):
                doc = json.loads(line)
                if doc.get("event") in names and "timestamp" in doc:
                    out.append(doc)
    return out


def moves(logs: Iterable[tuple[str, Path]], since: float = 0.0) -> list[Move]:
    """Every shard handed over at or after wall time ``since`` and acquired again, from the
    logs of ``(worker id, log path)``."""
    released: list[tuple[str, dict[str, Any]]] = []
    acquired: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for wid, path in logs:
        for e in _events(path, ("handed_over", "lease_acquired")):
            if e["event"] == "handed_over":
                released.append((wid, e))
            else:
                acquired.setdefault(str(e["shard"]), []).append((wid, e))
    out = []
    for wid, e in released:
        t = _wall(e)
        if t < since:
            continue
        later = [(w, a) for w, a in acquired.get(str(e["shard"]), []) if a["epoch"] > e["epoch"]]
        if not later:
            continue
        w, a = min(later, key=lambda wa: int(wa[1]["epoch"]))
        ready = _wall(a)
        got = ready - float(a.get("since_acquire_s", a.get("seconds", 0.0)))
        unowned, until_ready = round(max(0.0, got - t), 4), round(ready - t, 4)
        move = Move(str(e["shard"]), wid, w, int(a["epoch"]), t, unowned, until_ready, False)
        out.append(dataclasses.replace(move, warm=bool(a.get("warm"))))
    return sorted(out, key=lambda m: m.released)


def releases(logs: Iterable[tuple[str, Path]], since: float = 0.0) -> int:
    """How many ``handed_over`` lines at or after ``since``: a caller waits until ``moves``
    has found as many (the new owner logs its line after its takeover)."""
    return sum(1 for _w, path in logs for e in _events(path, ("handed_over",)) if _wall(e) >= since)


def summary(ms: list[Move]) -> dict[str, Any]:
    """p50 and max of both times, and how many moves (none: zeros)."""
    if not ms:
        return {"moves": 0}
    un = [m.unowned_s for m in ms]
    ready = [m.ready_s for m in ms]
    return {
        "moves": len(ms),
        "unowned_p50_s": round(statistics.median(un), 3),
        "unowned_max_s": round(max(un), 3),
        "ready_p50_s": round(statistics.median(ready), 3),
        "ready_max_s": round(max(ready), 3),
        "warm": sum(m.warm for m in ms),
    }
