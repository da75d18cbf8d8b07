"""The at-least-once reference for the mixed workload (figure k.loop*): what a team would write
by hand on redis-py instead of running eventfleet.

Each process is one consumer of a consumer group over every shard stream: XREADGROUP COUNT 100,
``json.loads`` per entry, then one pipeline per read that applies each entry and acks the read:
a top-up is an HINCRBY, an item an HSET of stock and price, an order one Lua call that checks
stock and balance, takes both and appends the outcome. State lives in three Redis hashes, so the
whole order is one hop. No validation, no dedup (a redelivered entry is applied again), no
fencing, no snapshots, no metrics: at-least-once.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import Any

import redis

from eventfleet.store import lua
from eventfleet.store.keys import EVENT_FIELD, Keys

GROUP = "bench-loop"
COUNT = 100

ORDER = lua.source("bench_loop_order")


def state_keys(ns: str) -> list[str]:
    """Stock, price, balance hashes and the outcome stream (one hash tag: a single Redis)."""
    return [f"{ns}:loop:stock", f"{ns}:loop:price", f"{ns}:loop:balance", f"{ns}:loop:outcomes"]


def queue_order(
    pipe: Any,
    sha: str,
    *,
    stock: str,
    price: str,
    balance: str,
    outcomes: str,
    item: Any,
    user: Any,
    qty: Any,
    order: Any,
) -> None:
    """Queue the order script (loaded as ``sha``): take ``qty`` of ``item`` from ``stock`` and
    its price from the user's ``balance`` when both suffice, and append the outcome."""
    pipe.evalsha(sha, 4, stock, price, balance, outcomes, item, user, qty, order)


def consume(r: redis.Redis, keys: Keys, shards: list[str], consumer: str) -> None:
    """Apply entries until the parent stops this process."""
    sha = r.script_load(ORDER)
    stock, price, balance, outcomes = state_keys(keys.ns)
    streams: dict[Any, Any] = {keys.events(s): ">" for s in shards}
    while True:
        reply: Any = r.xreadgroup(GROUP, consumer, streams, count=COUNT, block=50)
        if not reply:
            continue
        pipe = r.pipeline(transaction=False)
        for stream, entries in reply:
            for _eid, fields in entries:
                ev = json.loads(fields[EVENT_FIELD])
                kind = ev["type"]
                if kind == "topup":
                    pipe.hincrby(balance, ev["user_id"], ev["amount"])
                elif kind == "add_item":
                    pipe.hincrby(stock, ev["item_id"], ev["count"])
                    pipe.hset(price, ev["item_id"], ev["price"])
                elif kind == "order":
                    queue_order(
                        pipe,
                        sha,
                        stock=stock,
                        price=price,
                        balance=balance,
                        outcomes=outcomes,
                        item=ev["item_id"],
                        user=ev["user_id"],
                        qty=ev["qty"],
                        order=ev["order_id"],
                    )
            pipe.xack(stream, GROUP, *[eid for eid, _ in entries])
        pipe.execute()


def create_group(r: redis.Redis, keys: Keys, shards: list[str]) -> None:
    for s in shards:
        r.xgroup_create(keys.events(s), GROUP, id="0")


def progress(r: redis.Redis, keys: Keys, shards: list[str]) -> tuple[int, bool]:
    """Entries the loop's group has read, and whether it has read and acked everything."""
    pipe = r.pipeline(transaction=False)
    for s in shards:
        pipe.xinfo_groups(keys.events(s))
    read, idle = 0, True
    for groups in pipe.execute():
        g = next(g for g in groups if g["name"] in (GROUP, GROUP.encode()))
        read += int(g.get("entries-read") or 0)
        idle = idle and g.get("lag") == 0 and g["pending"] == 0
    return read, idle


def start(url: str, ns: str, shards: list[str], consumer: str) -> subprocess.Popen[bytes]:
    code = "from eventfleet.bench.loop_mixed import main; main()"
    args = [sys.executable, "-c", code, url, ns, ",".join(shards), consumer]
    return subprocess.Popen(args)


def run(
    r: redis.Redis, url: str, keys: Keys, shards: list[str], processes: int, timeout: float
) -> float:
    """Seconds from the loop's first read to every entry applied and acked, with
    ``processes`` consumers (each a fresh interpreter, as the workers are)."""
    create_group(r, keys, shards)
    procs = [start(url, keys.ns, shards, f"loop-{i}") for i in range(processes)]
    try:
        end = time.monotonic() + timeout
        while progress(r, keys, shards)[0] == 0:
            _check(procs, end)
            time.sleep(0.002)
        t0 = time.perf_counter()
        while not progress(r, keys, shards)[1]:
            _check(procs, end)
            time.sleep(0.01)
        return time.perf_counter() - t0
    finally:
        for p in procs:
            p.kill()
            p.wait(10)


def _check(procs: list[subprocess.Popen[bytes]], end: float) -> None:
    if any(p.poll() is not None for p in procs):
        raise RuntimeError("a reference loop process died")
    if time.monotonic() > end:
        raise RuntimeError("the reference loop did not finish in time")


def main() -> None:
    url, ns, shard_list, consumer = sys.argv[1:5]
    r = redis.Redis.from_url(url, socket_timeout=30)
    consume(r, Keys(ns), shard_list.split(","), consumer)
