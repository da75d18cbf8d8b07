"""The chaos run's JSON report: the verdict of ``verify``, what the producer published, the
fault log with recovery times, and what the worker logs show."""

from __future__ import annotations

import json
import os
import statistics
from collections import Counter
from dataclasses import asdict
from typing import Any

from eventfleet.chaos.config import DEFAULT_KINDS, KINDS, ChaosConfig
from eventfleet.chaos.faults import FaultRecord
from eventfleet.chaos.readers import ReadCheck
from eventfleet.chaos.rerun import FileRun, shortfall
from eventfleet.chaos.reshard import ReshardStep, step_problems
from eventfleet.chaos.waiters import OrderCheck, OrderWaiters
from eventfleet.ledger.shards import ShardCounts
from eventfleet.local.fleet import WorkerProc
from eventfleet.ops.verify import Report
from eventfleet.producer.client import Producer

VERDICT = ("mismatches", "invariant_violations", "duplicates_applied", "lost")


def build_report(
    cfg: ChaosConfig,
    counts: ShardCounts,
    result: Report,
    *,
    idle: bool,
    stop_codes: dict[str, int],
    records: list[FaultRecord],
    producer: Producer,
    published: int,
    producer_error: str | None,
    unexpected: list[dict[str, Any]],
    workers: list[WorkerProc],
    duration_s: float,
    files: list[FileRun] | None = None,
    grown: bool = False,
) -> dict[str, Any]:
    """``grown``: the counts grew during the run: the producer's events are followed one by
    one across the splits by ``add_growth`` instead of counted per shard here."""
    lost = result.count("lost")
    files = files or []
    taken = {
        shard: {src: f.applied_seqs.get(src, set()) | f.dead_seqs.get(src, set())
                for src in {run.source for run in files}}
        for shard, f in result.folds.items()
    }  # fmt: skip
    missing = shortfall(files, taken) + (0 if grown else producer_shortfall(result, producer))
    samples = [s for r in records for s in r.recovery_s]
    replayed, errors, takeovers = scan_logs(workers)
    problems = []
    if not idle:
        problems.append(f"the fleet was not idle {cfg.idle_timeout_s:g}s after the run")
    if producer_error:
        problems.append(f"the producer failed: {producer_error}")
    if missing:
        problems.append(f"{missing} published events never applied")
    if unexpected:
        problems.append(f"{len(unexpected)} workers exited by themselves")
    problems += [f"produce file {run.source}: {run.error}" for run in files if run.error]
    unrecovered = sum(len(r.unrecovered) for r in records)
    if unrecovered:
        problems.append(f"{unrecovered} shards did not apply again within 60 s of a fault")
    if any(stop_codes.values()):
        problems.append(f"workers exited non-zero on the final SIGTERM: {stop_codes}")
    faults = Counter(r.kind for r in records)
    doc: dict[str, Any] = {
        "events": cfg.events,
        "published": published,
        "file_lines_rerun": sum(len(n) for run in files for n in run.lines.values()),
        "faults": {k: faults.get(k, 0) for k in KINDS if k in DEFAULT_KINDS or faults[k]},
        "faults_total": len(records),
        "faults_in_flight": sum(1 for r in records if r.in_flight),
        "faults_with_backlog": sum(1 for r in records if r.backlog > 0),
        "mismatches": result.count("mismatch"),
        "invariant_violations": result.count("invariant"),
        "duplicates_applied": result.count("duplicate"),
        "lost": lost + missing,
        "dead_letters": result.totals.get("dead_letters", 0),
        "replayed_entries": replayed,
        "recovery_seconds": _spread(samples),
        "recovery_by_kind": {
            k: _spread([x for r in records if r.kind == k for x in r.recovery_s])
            for k in KINDS
            if faults[k]
        },
        "redis_restart_split": _restart_split(records),
        "scale_unowned": _unowned(records),
        "takeovers": takeovers,
        "duration_seconds": round(duration_s, 1),
        "ok": False,
        "problems": problems,
        "outcomes": result.totals.get("outcomes", {}),
        "entries_folded": result.totals.get("entries", 0),
        "worker_errors": errors,
        "unexpected_exits": unexpected,
        "verify": {
            "quiescent": result.quiescent,
            "findings": [vars(f) for f in result.findings.shown[:50]],
            "unchecked": result.unchecked,
        },
        "settings": {
            "workers": cfg.workers,
            "seed": cfg.seed,
            "rounds": cfg.rounds,
            "fault_interval_s": cfg.fault_interval,
            "lease_ttl_ms": cfg.lease_ttl_ms,
            "snapshot_interval_s": cfg.snapshot_interval_s,
            "user_shards": counts.users,
            "item_shards": counts.items,
            "cpus": os.cpu_count(),
        },
        "fault_log": [asdict(r) | {"in_flight": r.in_flight} for r in records],
    }
    doc["ok"] = not problems and not any(doc[k] for k in VERDICT)
    return doc


def add_reads(doc: dict[str, Any], check: ReadCheck, error: str | None, *, wanted: bool) -> None:
    """The readers' verdict in the report: every read held to the log; the run is not ok
    when one read was wrong, or readers were asked for and none read."""
    doc["reads"] = {"checked": check.reads, "wrong": len(check.wrong), "retried": check.errors}
    doc["reads_wrong"] = check.wrong[:20]
    if check.wrong:
        doc["problems"].append(f"{len(check.wrong)} reads returned a value the log does not give")
    if error:
        doc["problems"].append(f"the readers failed: {error}")
    elif wanted and not check.reads:
        doc["problems"].append("the readers read nothing")
    doc["ok"] = doc["ok"] and not check.wrong and not error and (check.reads > 0 or not wanted)


def producer_shortfall(result: Report, producer: Producer) -> int:
    """Events the producer published (per shard, by its seq) that no fold applied."""
    src = producer.source
    short = 0
    for shard, sent in producer.seq.items():
        fold = result.folds.get(shard)
        if fold is None:
            continue
        took = fold.applied_by(src) + len(fold.dead_seqs.get(src, ()))
        short += max(0, sent - took)
    return short


def _spread(samples: list[float]) -> dict[str, Any]:
    """p50, max and count of recovery times (seconds per shard)."""
    return {
        "p50": round(statistics.median(samples), 3) if samples else None,
        "max": round(max(samples), 3) if samples else None,
        "samples": len(samples),
    }


HANDOVER_TARGET_S = 0.3
"""The bound on a moved shard's time without an owner (bench o's target too)."""


def _unowned(records: list[FaultRecord]) -> dict[str, Any]:
    """Per shard moved by a ``scale`` fault, seconds from its release to its acquisition by
    the new owner: when workers joined (``up``) and when workers left on SIGTERM (``down``),
    and how many moves took longer than ``HANDOVER_TARGET_S`` (timing, not a verdict)."""
    up = [x for r in records for x in r.unowned_up_s]
    down = [x for r in records for x in r.unowned_down_s]
    return {
        "up": _spread(up),
        "down": _spread(down),
        "target_s": HANDOVER_TARGET_S,
        "over_target": sum(1 for x in up + down if x > HANDOVER_TARGET_S),
    }


def _restart_split(records: list[FaultRecord]) -> dict[str, Any]:
    """Each ``redis_restart`` recovery in two parts: redis-server's own down time (stop, start,
    AOF load) and the time the workers took after it answered again."""
    restarts = [r for r in records if r.kind == "redis_restart" and r.redis_down_s is not None]
    return {
        "redis_down": _spread([r.redis_down_s or 0.0 for r in restarts]),
        "after_redis_up": _spread(
            [round(x - (r.redis_down_s or 0.0), 4) for r in restarts for x in r.recovery_s]
        ),
    }


def scan_logs(workers: list[WorkerProc]) -> tuple[int, int, dict[str, int]]:
    """Entries replayed on takeovers (``lease_acquired`` lines), error lines, and how the
    takeovers started: from a warm standby's copy, or by breaking a dead worker's lease."""
    replayed = errors = 0
    takeovers = Counter[str]()
    for w in workers:
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
                takeovers["total"] += 1
                takeovers["warm"] += bool(doc.get("warm"))
                takeovers["broke_a_dead_workers_lease"] += bool(doc.get("broke"))
            errors += doc.get("level") == "error"
    return replayed, errors, dict(takeovers)


def add_growth(
    doc: dict[str, Any],
    counts: ShardCounts,
    steps: list[ReshardStep],
    sends: list[tuple[int, int]],
    unowned: list[str],
    orders: OrderCheck,
    waiters: OrderWaiters,
) -> None:
    """A ``--reshard`` run's verdict in the report: each step's duration, re-runs and faults,
    the producers' events followed across the splits (``sends``: lost, taken twice per
    producer), the final counts
    and their ownership, and the orders the waiters were told are confirmed."""
    lost, twice = sum(n for n, _ in sends), sum(n for _, n in sends)
    doc["lost"] += lost
    doc["duplicates_applied"] += twice
    doc["reshards"] = [s.as_json() for s in steps]
    doc["final_counts"] = f"{counts.users}x{counts.items}"
    doc["unowned_shards"] = unowned
    doc["orders_waited"] = {
        "told": orders.told,
        "confirmed": orders.confirmed,
        "changed": len(orders.wrong),
        "wait_errors": waiters.errors,
        "wait_seconds": _spread([t.took_s for t in waiters.told]),
        "timed_out": len(waiters.timed_out),
        "timed_out_but_decided": orders.timed_out_decided,
    }
    doc["orders_failures"] = waiters.failures
    doc["orders_wrong"] = orders.wrong[:20]
    problems = doc["problems"]
    problems += step_problems(steps)
    want = steps[-1] if steps else None
    if want is not None and (counts.users, counts.items) != (want.users, want.items):
        wanted = f"{want.users}x{want.items}"
        problems.append(f"the final counts are {doc['final_counts']}, not {wanted}")
    if unowned:
        problems.append(f"{len(unowned)} shards without an owner at the end: {unowned[:8]}")
    if orders.timed_out_decided:
        problems.append(
            f"{orders.timed_out_decided} order waits timed out although the logs decided the order"
        )
    if orders.wrong:
        problems.append(f"{len(orders.wrong)} orders no longer have the outcome a waiter was told")
    if waiters.error:
        problems.append(f"the order waiters failed: {waiters.error}")
    elif waiters.n and not orders.confirmed:
        problems.append("the order waiters were told of no confirmed order")
    doc["ok"] = doc["ok"] and not problems and not lost and not twice


def add_verify_command(doc: dict[str, Any], got: dict[str, Any]) -> None:
    """``eventfleet verify``'s own verdict (run as a process) in the report: not ok unless
    it exited 0."""
    doc["verify_command"] = got
    if got["exit"] != 0:
        doc["problems"].append(f"eventfleet verify exited {got['exit']}: {got}")
        doc["ok"] = False
