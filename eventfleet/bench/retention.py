"""Retention and archive figures for docs/SCALING.md, on a throwaway Redis:

1. Bytes per event and per stream entry in Redis with retention off (``EVENTFLEET_RETAIN_S=off``):
   a mixed workload at a steady rate, Redis' ``used_memory_dataset`` before and after.
2. The same workload with retention on (a short window, snapshots every second): the streams'
   memory sampled every second; its level after the window is the steady state.
3. ``eventfleet archive`` of the whole history of run 1: entries per second and bytes on disk.

    python -m eventfleet.bench.retention [--events N] [--rate R] [--window S] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import redis

from eventfleet.chaos.paced import PacedProducer
from eventfleet.ledger.shards import ShardCounts
from eventfleet.local.fleet import LocalFleet
from eventfleet.local.redisserver import LocalRedis
from eventfleet.ops.archive import archive
from eventfleet.ops.archive.writer import stream_key, streams_of
from eventfleet.ops.status import is_idle
from eventfleet.producer.workload import mixed
from eventfleet.store.keys import Keys
from eventfleet.store.namespace import init_namespace

COUNTS = ShardCounts(8, 8)
FLEET_ENV = {"EVENTFLEET_LEASE_TTL_MS": "2000", "EVENTFLEET_SNAPSHOT_INTERVAL_S": "1"}


def _stream_bytes(r: redis.Redis, keys: Keys) -> int:
    pipe = r.pipeline(transaction=False)
    for s in COUNTS.all_shards():
        for stream in streams_of(s):
            pipe.memory_usage(stream_key(keys, s, stream), samples=0)
    return sum(int(n or 0) for n in pipe.execute())


def _entries(r: redis.Redis, keys: Keys) -> int:
    total = 0
    for s in COUNTS.all_shards():
        for stream in streams_of(s):
            try:
                info: Any = r.xinfo_stream(stream_key(keys, s, stream))
            except redis.ResponseError:
                continue
            total += int(info["entries-added"])
    return total


def _run(
    work: Path, name: str, n: int, rate: float, retain: str, sample: bool
) -> tuple[LocalRedis, dict[str, Any]]:
    (work / name).mkdir(parents=True, exist_ok=True)
    server = LocalRedis(workdir=work / name).start()
    r = redis.Redis.from_url(server.url)
    keys = Keys("bench")
    init_namespace(r, keys, COUNTS)
    before = int(r.info("memory")["used_memory_dataset"])
    fleet = LocalFleet(server.url, "bench", work / name / "logs", env=FLEET_ENV)
    fleet.env["EVENTFLEET_RETAIN_S"] = retain
    fleet.start()
    fleet.start()
    events = list(mixed(n, seed=15, users=5000, items=200))
    producer = PacedProducer(r, keys, COUNTS, events, rate=rate, chunk=200)
    t0 = time.monotonic()
    producer.start()
    samples: list[tuple[float, int]] = []
    while producer.is_alive():
        if sample:
            samples.append((time.monotonic() - t0, _stream_bytes(r, keys)))
        time.sleep(1.0)  # the sampling period
    deadline = time.monotonic() + 300
    while not is_idle(r, keys, COUNTS) and time.monotonic() < deadline:
        time.sleep(0.2)
    fleet.stop_all(timeout=30)
    after = int(r.info("memory")["used_memory_dataset"])
    entries = _entries(r, keys)
    out: dict[str, Any] = {
        "events": n,
        "stream_entries": entries,
        "seconds": round(time.monotonic() - t0, 1),
        "dataset_bytes": after - before,
        "stream_bytes": _stream_bytes(r, keys),
        "bytes_per_event": round((after - before) / n, 1),
        "bytes_per_entry": round((after - before) / entries, 1),
    }
    if samples:
        late = [b for t, b in samples if t > samples[-1][0] / 2]
        out["samples"] = samples
        out["steady_stream_bytes_median"] = int(statistics.median(late)) if late else None
        out["steady_stream_bytes_max"] = max(late) if late else None
    r.close()
    return server, out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m eventfleet.bench.retention")
    ap.add_argument("--events", type=int, default=120_000)
    ap.add_argument("--rate", type=float, default=3000)
    ap.add_argument("--window", type=float, default=10.0)
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="eventfleet-retention-") as tmp:
        work = Path(tmp)
        full, kept = _run(work, "kept", a.events, a.rate, "off", sample=False)
        try:
            r = redis.Redis.from_url(full.url)
            t0 = time.monotonic()
            stats = archive(r, Keys("bench"), COUNTS, work / "archive")
            secs = time.monotonic() - t0
            arch = {
                "entries": stats.entries,
                "segments": stats.segments,
                "seconds": round(secs, 2),
                "entries_per_s": round(stats.entries / secs),
                "bytes_on_disk": stats.bytes,
                "bytes_per_million_events": round(stats.bytes / a.events * 1_000_000),
            }
            r.close()
        finally:
            full.close()
        trimmed_server, trimmed = _run(
            work, "trimmed", a.events, a.rate, f"{a.window:g}", sample=True
        )
        trimmed_server.close()
    result = {
        "rate": a.rate,
        "window_s": a.window,
        "retention_off": kept,
        "retention_on": trimmed,
        "archive": arch,
    }
    text = json.dumps({k: v for k, v in result.items()}, indent=1)
    if a.json:
        a.json.write_text(text)
    summary = {**result, "retention_on": {k: v for k, v in trimmed.items() if k != "samples"}}
    print(json.dumps(summary, indent=1))  # noqa: T201 (a command-line tool)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
