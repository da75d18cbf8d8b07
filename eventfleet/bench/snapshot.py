"""Snapshots of a big shard (figure i): one user shard holding ``n`` users.

A worker applies ``n`` top-ups (user ids 1..n, all on the one user shard) and, on SIGTERM,
writes its final snapshot; a second worker takes the shard over from that snapshot. The
snapshot write (encode + fenced SET) and restore (GET + decode) are timed here with the
worker's own functions; each worker's peak RSS is its lifetime high-water mark
(VmHWM), so it includes applying, encoding and restoring.
"""

from __future__ import annotations

import signal
import statistics
import time
from collections.abc import Iterator
from typing import Any

from eventfleet.bench.env import (
    BenchEnv,
    BenchError,
    deadline_wait,
    first_read_and_idle,
    log_events,
    peak_rss_mb,
)
from eventfleet.ledger.events import Topup
from eventfleet.ledger.shards import ShardCounts
from eventfleet.local.fleet import WorkerProc
from eventfleet.producer.client import Producer
from eventfleet.store.keys import Keys
from eventfleet.store.shardreads import load_snapshot
from eventfleet.worker.scripts import Scripts

COUNTS = ShardCounts(1, 1)
REPEATS = 3


def users(n: int) -> Iterator[Topup]:
    for uid in range(1, n + 1):
        yield Topup(user_id=uid, amount=1 + uid % 997)


def stop_and_peak_rss_mb(w: WorkerProc, timeout: float = 60.0) -> float:
    """SIGTERM (drain: final snapshot, release), and the worker's peak RSS until it exits.

    The peak is the kernel's high-water mark of the worker's own address space (VmHWM),
    read until the process is gone. (``wait4``'s ``ru_maxrss`` would not do: it also counts
    the parent's pages that the child held between fork and exec.)
    """
    w.proc.send_signal(signal.SIGTERM)
    end = time.monotonic() + timeout
    peak = 0.0
    while w.proc.poll() is None:
        peak = max(peak, peak_rss_mb(w.proc.pid))
        if time.monotonic() > end:
            w.proc.kill()
            raise BenchError(f"worker {w.worker_id} did not stop within {timeout:g}s")
        time.sleep(0.001)
    return peak


def _write_once(env: BenchEnv, keys: Keys, scripts: Scripts, state: Any) -> float:
    lease, shard = keys.lease("u0"), "u0"
    epoch = scripts.acquire(
        env.client, lease=lease, epoch=keys.epoch(shard), worker_id="bench", ttl_ms=30_000
    )
    if not isinstance(epoch, int):
        raise BenchError("the snapshot lease is still held by a worker")
    token = f"bench:{int(epoch)}"
    t0 = time.perf_counter()
    data = state.to_snapshot(taken_ms=int(time.time() * 1000))
    ok = scripts.save_snapshot(
        env.client, lease=lease, snapshot=keys.snapshot(shard), token=token, data=data
    )
    secs = time.perf_counter() - t0
    scripts.release(env.client, lease=lease, token=token)
    if ok != 1:
        raise BenchError("the fenced snapshot write was refused")
    return secs


def snapshot(env: BenchEnv, n: int) -> dict[str, Any]:
    keys = env.namespace("bench-i", COUNTS)
    r = env.client
    Producer(r, keys, COUNTS).publish(users(n))
    fleet = env.fleet(keys.ns)
    builder = fleet.start()
    win = first_read_and_idle(env, keys, COUNTS, 600, [builder], base=0)  # a new namespace
    rss_builder = stop_and_peak_rss_mb(builder)
    written = log_events(builder, "snapshot_written")
    if not written:
        raise BenchError("the worker wrote no snapshot on SIGTERM")

    restores = []
    state = None
    for _ in range(REPEATS):
        t = time.perf_counter()
        state = load_snapshot(r, keys, "u0")
        restores.append(time.perf_counter() - t)
    if state is None or len(state.balances) != n:
        raise BenchError("the snapshot does not hold every user")
    scripts = Scripts.register(r)
    writes = [_write_once(env, keys, scripts, state) for _ in range(REPEATS)]
    size = int(r.strlen(keys.snapshot("u0")))
    del state

    taker = fleet.start()

    def restored() -> list[dict[str, Any]]:
        return [e for e in log_events(taker, "lease_acquired") if e.get("shard") == "u0"]

    deadline_wait(lambda: bool(restored()), 120, "the takeover")
    acquired = restored()
    rss_after_restore = peak_rss_mb(taker.proc.pid)
    rss_taker = stop_and_peak_rss_mb(taker)
    env.drop(keys)
    return {
        "users": n,
        "apply_events_per_s": round(n / win.seconds, 1),
        "snapshot_bytes": size,
        "snapshot_mb": round(size / 1e6, 2),
        "write_s": round(statistics.median(writes), 4),
        "restore_s": round(statistics.median(restores), 4),
        "worker_takeover_s": acquired[0].get("seconds") if acquired else None,
        "peak_rss_mb": round(max(rss_builder, rss_taker), 1),
        "rss_builder_mb": round(rss_builder, 1),
        "rss_taker_after_restore_mb": round(rss_after_restore, 1),
        "rss_taker_mb": round(rss_taker, 1),
    }
