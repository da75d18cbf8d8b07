"""The application client and its read model (issue 25): scenarios p, r and m.

p. publishing with ``eventfleet.Client`` and ``eventfleet.aio.Client``: ``publish_many`` of
   the mixed workload given as dicts (validated by the client), against ``produce file``'s
   path (scenario a's code: the file validated, then published) in alternating rounds of the
   same run; and one event per call (``topup``), one caller, a round trip each.
r. ``client.balance(user)`` latency with ``users`` users on ONE user shard (top-ups
   published, applied by one worker, which writes the read model the real way), ``readers``
   concurrent readers: threads sharing one sync client, then asyncio tasks sharing one
   ``eventfleet.aio.Client`` on one event loop, each reading again as soon as its read
   returns; the same two paced (``PACED`` reads per second offered in all); and one reader
   alone (the read without queueing behind the others). Every value read is checked against the
   balance the user was given. Against the fold-based read ``eventfleet state user`` does
   (``eventfleet.ops.reader.current``) on the same data: once while the owner runs (its
   snapshot, if it wrote one yet, plus the log after it), then from the final snapshot the
   owner writes when stopped.
m. the read model's memory per user, item and order: one user and one item shard, ``n``
   top-ups (distinct users), ``n`` items, then ``n`` orders (each confirmed), all applied by a
   worker; ``MEMORY USAGE <model> SAMPLES 0`` of each shard's model hash after each step
   (per item: the item shard's model over ``n``; per user: the user shard's after the
   top-ups; per order: what the orders added to it).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import statistics
import threading
import time
from collections.abc import Callable
from typing import Any

import redis

import eventfleet
from eventfleet import aio
from eventfleet.bench import runs as bench_runs
from eventfleet.bench.env import (
    BenchEnv,
    BenchError,
    cpu_seconds,
    deadline_wait,
    first_read_and_idle,
)
from eventfleet.bench.snapshot import stop_and_peak_rss_mb, users
from eventfleet.ledger.events import AddItem, Order, Topup
from eventfleet.ledger.shards import ShardCounts
from eventfleet.ops.reader import current
from eventfleet.ops.status import is_idle
from eventfleet.producer.client import Producer
from eventfleet.producer.workload import mixed
from eventfleet.store.keys import Keys

ONE = ShardCounts(1, 1)
"""r and m: every user on one user shard, every item on one item shard."""


def _rate(events: int, seconds: float) -> float:
    return round(events / seconds, 1) if seconds > 0 else 0.0


def _ms(sorted_s: list[float], p: float) -> float:
    i = min(len(sorted_s) - 1, max(0, round(p / 100 * len(sorted_s) + 0.5) - 1))
    return round(sorted_s[i] * 1000, 3)


# ---- p ----------------------------------------------------------------------------------
def publish_rates(env: BenchEnv, n: int, rounds: int, calls: int) -> dict[str, Any]:
    """Alternating rounds of a's ``produce file`` path, ``Client.publish_many`` and
    ``aio.Client.publish_many`` over the same ``n`` mixed events; medians and every round."""
    counts = bench_runs.COUNTS
    rows = [
        ev.model_dump(mode="json")
        for ev in mixed(n, seed=7, users=bench_runs.MIXED_USERS, items=bench_runs.MIXED_ITEMS)
    ]
    a_runs: list[float] = []
    sync_runs: list[float] = []
    aio_runs: list[float] = []
    for _ in range(rounds):
        a_runs.append(bench_runs.producer_file(env, n)["events_per_s"])
        keys = env.namespace("bench-p", counts)
        with eventfleet.Client.from_url(env.url, namespace=keys.ns) as client:
            t0 = time.perf_counter()
            sent = client.publish_many(rows).count
            sync_runs.append(_rate(sent, time.perf_counter() - t0))
        env.drop(keys)
        keys = env.namespace("bench-p", counts)
        aio_runs.append(asyncio.run(_aio_publish(env.url, keys.ns, rows)))
        env.drop(keys)
    keys = env.namespace("bench-p", counts)
    with eventfleet.Client.from_url(env.url, namespace=keys.ns) as client:
        client.topup(user=1, amount=1)  # connected
        t0 = time.perf_counter()
        for i in range(calls):
            client.topup(user=1 + i % 1000, amount=1)
        one_sync = _rate(calls, time.perf_counter() - t0)
    one_aio = asyncio.run(_aio_one_by_one(env.url, keys.ns, calls))
    env.drop(keys)
    a, s, x = (statistics.median(v) for v in (a_runs, sync_runs, aio_runs))
    return {
        "events": n,
        "rounds": rounds,
        "produce_file_per_s": a,
        "sync_per_s": s,
        "aio_per_s": x,
        "sync_vs_file": round(s / a, 2) if a else 0.0,
        "aio_vs_file": round(x / a, 2) if a else 0.0,
        "produce_file_runs": a_runs,
        "sync_runs": sync_runs,
        "aio_runs": aio_runs,
        "calls": calls,
        "one_call_sync_per_s": one_sync,
        "one_call_aio_per_s": one_aio,
    }


async def _aio_publish(url: str, ns: str, rows: list[dict[str, Any]]) -> float:
    async with aio.Client.from_url(url, namespace=ns) as client:
        await client.publish_many([])  # connected, shard counts read
        t0 = time.perf_counter()
        sent = (await client.publish_many(rows)).count
        return _rate(sent, time.perf_counter() - t0)


async def _aio_one_by_one(url: str, ns: str, calls: int) -> float:
    async with aio.Client.from_url(url, namespace=ns) as client:
        await client.topup(user=1, amount=1)
        t0 = time.perf_counter()
        for i in range(calls):
            await client.topup(user=1 + i % 1000, amount=1)
        return _rate(calls, time.perf_counter() - t0)


# ---- r ----------------------------------------------------------------------------------
def expected_balance(uid: int) -> int:
    """What ``eventfleet.bench.snapshot.users`` gave user ``uid`` (its one top-up)."""
    return 1 + uid % 997


def _sync_readers(
    client: eventfleet.Client, n_users: int, readers: int, seconds: float, rate: float = 0.0
) -> tuple[list[float], int]:
    """``readers`` threads reading random users' balances for ``seconds``: every latency, and
    how many reads returned a wrong value. Each reads again as soon as its read returns, or
    with ``rate`` (reads per second in all) on a schedule of its own (a late reader reads at
    once; a latency is timed from the call either way)."""
    period = readers / rate if rate else 0.0
    ready = threading.Barrier(readers + 1)
    stop = threading.Event()
    lats: list[list[float]] = [[] for _ in range(readers)]
    wrong = [0] * readers
    errors: list[BaseException] = []

    def reader(k: int) -> None:
        rng = random.Random(k)
        mine = lats[k]
        try:
            for _ in range(5):  # its connection made before the clock starts
                client.balance(rng.randint(1, n_users))
            ready.wait()
            clock = time.perf_counter
            due = clock() + rng.random() * period
            while not stop.is_set():
                if period:
                    wait = due - clock()
                    if wait > 0:
                        time.sleep(wait)
                    due += period
                uid = rng.randint(1, n_users)
                t = clock()
                got = client.balance(uid)
                mine.append(clock() - t)
                if got != expected_balance(uid):
                    wrong[k] += 1
        except BaseException as exc:  # reported by the caller
            errors.append(exc)
            if not ready.broken:
                ready.abort()

    threads = [threading.Thread(target=reader, args=(k,), daemon=True) for k in range(readers)]
    for t in threads:
        t.start()
    with contextlib.suppress(threading.BrokenBarrierError):  # a reader failed: raised below
        ready.wait(timeout=60)
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join(timeout=30)
    if errors:
        raise BenchError(f"a reader failed: {errors[0]!r}")
    return [x for xs in lats for x in xs], sum(wrong)


async def _aio_readers(
    url: str, ns: str, n_users: int, readers: int, seconds: float, rate: float = 0.0
) -> tuple[list[float], int]:
    """The same with ``readers`` tasks on one event loop sharing one asyncio client."""
    period = readers / rate if rate else 0.0
    lats: list[float] = []
    wrong = 0
    async with aio.Client.from_url(url, namespace=ns) as client:
        start = asyncio.Event()
        stop = False

        async def reader(k: int) -> None:
            nonlocal wrong
            rng = random.Random(1000 + k)
            for _ in range(5):
                await client.balance(rng.randint(1, n_users))
            await start.wait()
            clock = time.perf_counter
            due = clock() + rng.random() * period
            while not stop:
                if period:
                    wait = due - clock()
                    if wait > 0:
                        await asyncio.sleep(wait)
                    due += period
                uid = rng.randint(1, n_users)
                t = clock()
                got = await client.balance(uid)
                lats.append(clock() - t)
                if got != expected_balance(uid):
                    wrong += 1

        tasks = [asyncio.create_task(reader(k)) for k in range(readers)]
        await asyncio.sleep(0.5)  # every task connected and waiting
        start.set()
        await asyncio.sleep(seconds)
        stop = True
        await asyncio.gather(*tasks)
    return lats, wrong


def _latency(prefix: str, lats: list[float], wrong: int, seconds: float) -> dict[str, Any]:
    if not lats:
        raise BenchError(f"{prefix}: no read completed")
    if wrong:
        raise BenchError(f"{prefix}: {wrong} of {len(lats)} reads returned a wrong balance")
    lats.sort()
    return {
        f"{prefix}_reads": len(lats),
        f"{prefix}_reads_per_s": _rate(len(lats), seconds),
        f"{prefix}_p50_ms": _ms(lats, 50),
        f"{prefix}_p99_ms": _ms(lats, 99),
        f"{prefix}_max_ms": round(lats[-1] * 1000, 3),
    }


def _fold_read(env: BenchEnv, keys: Keys, uid: int, reps: int) -> dict[str, Any]:
    """``eventfleet state user``'s read of one user, ``reps`` times: seconds per read."""
    secs = []
    tail = 0
    from_snapshot = False
    for _ in range(reps):
        t = time.perf_counter()
        folded = current(env.client, keys, "u0", ONE)
        got = folded.state.balances.get(uid, 0)
        secs.append(time.perf_counter() - t)
        if got != expected_balance(uid):
            raise BenchError(f"the fold read user {uid}'s balance as {got}")
        tail, from_snapshot = folded.tail, folded.from_snapshot
        del folded
    return {
        "s": round(statistics.median(secs), 4),
        "runs": [round(x, 4) for x in secs],
        "tail": tail,
        "from_snapshot": from_snapshot,
    }


PACED = 2_000.0
"""Reads per second offered in all by the paced readers (r.*paced): about half of what 50
asyncio tasks read back to back on this machine."""


def read_latency(
    env: BenchEnv,
    n_users: int,
    readers: int,
    seconds: float,
    fold_reps: int,
    paced: float = PACED,
) -> dict[str, Any]:
    keys = env.namespace("bench-r", ONE)
    r = env.client
    Producer(r, keys, ONE).publish(users(n_users))
    fleet = env.fleet(keys.ns)
    owner = fleet.start()
    win = first_read_and_idle(env, keys, ONE, 900, [owner], base=0)  # a new namespace
    model = keys.model("u0")
    held = model_written(r, model, n_users, "users")
    model_bytes = int(r.memory_usage(model, samples=0) or 0)
    out: dict[str, Any] = {
        "users": n_users,
        "readers": readers,
        "seconds": seconds,
        "paced_reads_per_s": paced,
        "build_events_per_s": _rate(n_users, win.seconds),
        "model_fields": held,
        "model_mb": round(model_bytes / 2**20, 1),
        "model_bytes_per_user": round(model_bytes / n_users, 1),
    }
    redis_pid = env.server.proc.pid if env.server and env.server.proc else 0

    def measured(prefix: str, secs: float, fn: Callable[[], tuple[list[float], int]]) -> None:
        """``fn``'s reads, and the CPU this process and Redis spent per read meanwhile."""
        cpu0, rcpu0 = time.process_time(), cpu_seconds(redis_pid)
        lats, wrong = fn()
        cpu, rcpu = time.process_time() - cpu0, cpu_seconds(redis_pid) - rcpu0
        out.update(_latency(prefix, lats, wrong, secs))
        out[f"{prefix}_cpu_us_per_read"] = round(cpu / len(lats) * 1e6, 1)
        out[f"{prefix}_redis_cpu_us_per_read"] = round(rcpu / len(lats) * 1e6, 1)

    with eventfleet.Client.from_url(env.url, namespace=keys.ns) as client:
        measured("alone", seconds / 2, lambda: _sync_readers(client, n_users, 1, seconds / 2))
        measured("threads", seconds, lambda: _sync_readers(client, n_users, readers, seconds))
        measured(
            "threads_paced",
            seconds / 2,
            lambda: _sync_readers(client, n_users, readers, seconds / 2, paced),
        )
    measured(
        "tasks",
        seconds,
        lambda: asyncio.run(_aio_readers(env.url, keys.ns, n_users, readers, seconds)),
    )
    measured(
        "tasks_paced",
        seconds / 2,
        lambda: asyncio.run(_aio_readers(env.url, keys.ns, n_users, readers, seconds / 2, paced)),
    )
    uid = n_users // 2 + 1
    running = _fold_read(env, keys, uid, 1)
    out |= {
        "fold_running_s": running["s"],
        "fold_running_tail": running["tail"],
        "fold_running_from_snapshot": running["from_snapshot"],
    }
    stop_and_peak_rss_mb(owner, timeout=120)  # drains: the final snapshot
    final = _fold_read(env, keys, uid, fold_reps)
    out |= {
        "fold_snapshot_s": final["s"],
        "fold_snapshot_runs": final["runs"],
        "fold_snapshot_tail": final["tail"],
        "fold_snapshot_from_snapshot": final["from_snapshot"],
        "fold_vs_threads_p50": round(final["s"] * 1000 / out["threads_p50_ms"], 1),
    }
    env.drop(keys)
    return out


# ---- m ----------------------------------------------------------------------------------
def memory_inputs(n: int) -> tuple[list[Topup], list[AddItem], list[Order]]:
    """``n`` users with a top-up each, ``n`` items priced 1, and ``n`` orders of one unit (each
    user orders one item once, so each is confirmed), order ids as ``Client.order`` makes them
    (``o-`` and 16 hex digits)."""
    tops = [Topup(user_id=u, amount=100) for u in range(1, n + 1)]
    items = [AddItem(item_id=f"sku-{i}", count=10, price=1) for i in range(n)]
    orders = [
        Order(order_id=f"o-{i:016x}", user_id=i + 1, item_id=f"sku-{i}", qty=1) for i in range(n)
    ]
    return tops, items, orders


def model_written(r: redis.Redis, key: str, want: int, what: str) -> int:
    """Wait until the read model ``key`` holds at least ``want`` fields, and return how many
    it holds: idle means every entry acked, and a model write deferred while the shard was
    behind (``EVENTFLEET_MODEL_DEFER_MS``, ``eventfleet.worker.modeldefer``) follows it."""
    try:
        deadline_wait(lambda: int(r.hlen(key)) >= want, 30, "the read model", poll=0.02)
    except BenchError:
        held = int(r.hlen(key))
        raise BenchError(f"the read model holds {held} fields for {want} {what}") from None
    return int(r.hlen(key))


def model_memory(env: BenchEnv, n: int) -> dict[str, Any]:
    keys = env.namespace("bench-m", ONE)
    r = env.client
    fleet = env.fleet(keys.ns)
    fleet.start()
    producer = Producer(r, keys, ONE)
    ukey, ikey = keys.model("u0"), keys.model("i0")

    def applied(events: list[Any], key: str, want: int, what: str) -> None:
        producer.publish(events)
        deadline_wait(lambda: is_idle(r, keys, ONE), 600, "the worker to apply", poll=0.05)
        model_written(r, key, want, what)

    def usage(key: str) -> int:
        return int(r.memory_usage(key, samples=0) or 0)

    tops, items, orders = memory_inputs(n)
    applied(tops, ukey, n, "users")
    users_b = usage(ukey)
    applied(items, ikey, n, "items")
    items_b = usage(ikey)
    applied(orders, ukey, 2 * n, "users and orders")
    orders_b = usage(ukey) - users_b
    confirmed = sum(1 for v in r.hvals(ukey) if v == b"confirmed")
    fleet.stop_all()
    env.drop(keys)
    if confirmed != n:
        raise BenchError(f"{confirmed} of {n} orders confirmed in the read model")
    return {
        "n": n,
        "user_model_bytes": users_b,
        "item_model_bytes": items_b,
        "orders_added_bytes": orders_b,
        "bytes_per_user": round(users_b / n, 1),
        "bytes_per_item": round(items_b / n, 1),
        "bytes_per_order": round(orders_b / n, 1),
        "fields": "b:<user id> <balance>; i:sku-<n> '<remain> <price>'; "
        "o:<user id>/o-<16 hex> confirmed",
    }
