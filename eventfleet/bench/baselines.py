"""The two reference consumers the worker is measured against (figures e and f).

Both read the same top-ups as the worker through their own consumer group, so the data and
the Redis are the same; each runs in a fresh process, as the worker does.

- ``naive``: XREADGROUP COUNT 1 on one shard at a time, ``json.loads``, add to a dict,
  XACK that one entry: two round trips per event, what a straight port of a
  one-event-at-a-time consumer does.
- ``bare``: XREADGROUP COUNT <batch> over every shard at once, ``json.loads``, add to a dict,
  one pipeline of XACKs per read: no validation, no dedup, no fencing, no effects, no
  metrics. The Python-side ceiling for a consumer-group loop.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import Any

import redis

from eventfleet.store.keys import EVENT_FIELD, Keys

NAIVE_GROUP = "bench-naive"
BARE_GROUP = "bench-bare"


def create_group(r: redis.Redis, keys: Keys, shards: list[str], group: str) -> None:
    for s in shards:
        r.xgroup_create(keys.events(s), group, id="0")


def naive(r: redis.Redis, keys: Keys, shards: list[str], limit: int) -> tuple[int, float]:
    balances: dict[int, int] = {}
    streams = [keys.events(s) for s in shards]
    done = 0
    empty = 0
    t0 = time.perf_counter()
    while done < limit and empty < len(streams):
        for stream in streams:
            reply: Any = r.xreadgroup(NAIVE_GROUP, "c", {stream: ">"}, count=1)
            if not reply:
                empty += 1
                continue
            empty = 0
            for eid, fields in reply[0][1]:
                ev = json.loads(fields[EVENT_FIELD])
                balances[ev["user_id"]] = balances.get(ev["user_id"], 0) + ev["amount"]
                r.xack(stream, NAIVE_GROUP, eid)
                done += 1
            if done >= limit:
                break
    return done, time.perf_counter() - t0


def bare(
    r: redis.Redis, keys: Keys, shards: list[str], limit: int, batch: int
) -> tuple[int, float]:
    balances: dict[int, int] = {}
    streams: dict[Any, Any] = {keys.events(s): ">" for s in shards}
    done = 0
    t0 = time.perf_counter()
    while done < limit:
        reply: Any = r.xreadgroup(BARE_GROUP, "c", streams, count=batch)
        if not reply:
            break
        pipe = r.pipeline(transaction=False)
        for stream, entries in reply:
            for _eid, fields in entries:
                ev = json.loads(fields[EVENT_FIELD])
                balances[ev["user_id"]] = balances.get(ev["user_id"], 0) + ev["amount"]
            pipe.xack(stream, BARE_GROUP, *[eid for eid, _ in entries])
            done += len(entries)
        pipe.execute()
    return done, time.perf_counter() - t0


def run_in_child(kind: str, url: str, ns: str, shards: list[str], limit: int, batch: int) -> Any:
    """Run one baseline in a fresh interpreter; its result as a dict."""
    code = "from eventfleet.bench.baselines import main; main()"
    args = [sys.executable, "-c", code, kind, url, ns, ",".join(shards), str(limit), str(batch)]
    out = subprocess.run(args, capture_output=True, text=True, timeout=600, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"baseline {kind} failed: {out.stderr[-1000:]}")
    return json.loads(out.stdout)


def main() -> None:
    kind, url, ns, shard_list, limit_s, batch_s = sys.argv[1:7]
    r = redis.Redis.from_url(url, socket_timeout=30)
    keys, shards, limit = Keys(ns), shard_list.split(","), int(limit_s)
    if kind == "naive":
        create_group(r, keys, shards, NAIVE_GROUP)
        n, secs = naive(r, keys, shards, limit)
    else:
        create_group(r, keys, shards, BARE_GROUP)
        n, secs = bare(r, keys, shards, limit, int(batch_s))
    sys.stdout.write(json.dumps({"events": n, "seconds": secs}) + "\n")
