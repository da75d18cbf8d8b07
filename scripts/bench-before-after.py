"""Scenarios of ``eventfleet bench`` on an earlier commit and on this tree, alternating, in one
sitting: what a change costs, measured with the machine's load shared by both sides.

    .venv/bin/python scripts/bench-before-after.py --before 443264b --runs 3 --only b,k

The earlier commit is checked out into a git worktree (removed afterwards) and run with the
same Python (``PYTHONPATH`` and the working directory set to its tree, so the bench and the
worker processes it starts import that tree's code); this tree is run the same way. Prints
each figure's range per side (and b's worker and Redis CPU per event in microseconds,
``b.wcpu`` and ``b.rcpu``, which the machine's load moves least; w's API CPU per HTTP top-up
in milliseconds, ``w.tcpu``) and writes every run's JSON into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent.parent
FIGURES = (
    "b",
    "b.wcpu",
    "b.rcpu",
    "k.ef1",
    "k.ef2",
    "k.loop1",
    "k.loop2",
    "k.r1",
    "k.r2",
    "e",
    "f",
    "w.http",
    "w.client",
    "w.ratio",
    "w.p50",
    "w.tcpu",
)


def run_bench(tree: Path, only: str, quick: bool, out: Path) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    cmd = [sys.executable, "-m", "eventfleet", "bench", "--only", only, "--out", str(out)]
    if quick:
        cmd.append("--quick")
    subprocess.run(cmd, cwd=tree, env=env, check=True, stdout=subprocess.DEVNULL)
    doc: dict[str, Any] = json.loads(out.read_text())
    return doc


def imported_from(tree: Path) -> str:
    """Where the tree's ``worker`` and ``eventfleet`` packages are imported from."""
    code = "import worker, eventfleet; print(worker.__file__, eventfleet.__file__)"
    env = {**os.environ, "PYTHONPATH": str(tree)}
    return subprocess.run(
        [sys.executable, "-c", code], cwd=tree, env=env, check=True, capture_output=True, text=True
    ).stdout.strip()


def cpu_per_event(doc: dict[str, Any]) -> dict[str, float]:
    """b's worker and Redis CPU per event (us): what the machine's load moves least."""
    b = doc["scenarios"].get("b")
    if not b or not b.get("events"):
        return {}
    per = b["seconds"] / b["events"] * 1e6
    return {
        "b.wcpu": round(b["worker_cpu_util"] * per, 2),
        "b.rcpu": round(b["redis_cpu_util"] * per, 2),
    }


def api_cpu(doc: dict[str, Any]) -> dict[str, float]:
    """w's API CPU per HTTP top-up (ms), apart from its orders."""
    w = doc["scenarios"].get("w")
    if not w or "api_cpu_ms_per_topup" not in w:
        return {}
    return {"w.tcpu": w["api_cpu_ms_per_topup"]}


def span(values: list[float]) -> str:
    if not values:
        return "-"
    lo, hi = min(values), max(values)

    def fmt(v: float) -> str:
        return f"{v:,.0f}" if hi >= 1000 else f"{v:g}"

    return fmt(lo) if lo == hi else f"{fmt(lo)}-{fmt(hi)}"


def main() -> int:
    ap = argparse.ArgumentParser(prog="scripts/bench-before-after.py")
    ap.add_argument("--before", default="443264b", help="the earlier commit")
    ap.add_argument("--runs", type=int, default=3, help="runs of each side")
    ap.add_argument("--only", default="b,k", help="scenarios (eventfleet bench --only)")
    ap.add_argument("--quick", action="store_true", help="eventfleet bench --quick")
    ap.add_argument("--out", type=Path, default=Path("bench-before-after"), help="a directory")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    before = Path(tempfile.mkdtemp(prefix="ef-before-")) / "tree"
    subprocess.run(
        ["git", "worktree", "add", "--detach", str(before), args.before],
        cwd=HERE,
        check=True,
        capture_output=True,
    )
    sides = {"before": before, "after": HERE}
    runs: dict[str, list[dict[str, Any]]] = {"before": [], "after": []}
    try:
        for side, tree in sides.items():
            sys.stderr.write(f"{side}: {imported_from(tree)}\n")
        for i in range(args.runs):
            order = ("before", "after") if i % 2 == 0 else ("after", "before")
            for side in order:
                out = args.out / f"{side}-{i + 1}.json"
                doc = run_bench(sides[side], args.only, args.quick, out)
                doc["figures"] |= cpu_per_event(doc) | api_cpu(doc)
                runs[side].append(doc)
                figs = {k: doc["figures"][k] for k in FIGURES if k in doc["figures"]}
                sys.stderr.write(
                    f"{side} {i + 1} {doc['started']} load {doc['load_before']} -> "
                    f"{doc['load_after']}: {figs}\n"
                )
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(before)], cwd=HERE, check=False)
    sys.stdout.write(f"{'figure':<9} {'before (' + args.before + ')':>24} {'after':>24}\n")
    for key in FIGURES:
        vals = {s: [d["figures"][key] for d in runs[s] if key in d["figures"]] for s in runs}
        if vals["before"] or vals["after"]:
            sys.stdout.write(f"{key:<9} {span(vals['before']):>24} {span(vals['after']):>24}\n")
    summary = {"before": args.before, "runs": runs}
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
