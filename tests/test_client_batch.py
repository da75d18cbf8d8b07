"""The client's batched reads (eventfleet/client/batch.py) against a real Redis: reads queued
while a round trip is in flight go out together in the next one, every caller gets its own
values, an error reaches exactly the callers of the failed round trip, and the clients'
``balance``/``item`` read through it."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from typing import Any

import redis
from hypothesis import given
from hypothesis import strategies as st

from eventfleet.client.batch import AsyncReads, Reads, afetch, fetch, group, split
from eventfleet.local.redisserver import LocalRedis
from tests.helpers import wait_for

READERS = 50

keys_ = st.sampled_from(["k1", "k2", "k3"])
fields_ = st.lists(st.sampled_from(["a", "b", "c"]), min_size=1, max_size=4)


@given(st.lists(st.tuples(keys_, fields_), min_size=1, max_size=20))
def test_split_hands_each_request_its_own_slice(requests: list[tuple[str, list[str]]]) -> None:
    by_key = group(requests)
    replies = {k: [f"{k}.{f}.{i}" for i, f in enumerate(fs)] for k, fs in by_key.items()}
    out = split(requests, replies)
    assert [len(v) for v in out] == [len(f) for _k, f in requests]
    for (key, fields), values in zip(requests, out, strict=True):
        assert [v.split(".")[:2] for v in values] == [[key, f] for f in fields]
    assert sorted(v for vs in out for v in vs) == sorted(v for vs in replies.values() for v in vs)


def _fill(r: redis.Redis) -> None:
    r.hset("m1", mapping={f"b:{i}": i for i in range(READERS)})
    r.hset("m2", mapping={f"b:{i}": 1000 + i for i in range(READERS)})


class Gate:
    """A ``send`` that holds its first round trip until ``queued()`` says the others have
    queued, and records every round trip's size."""

    def __init__(self, r: Any, queued: Any) -> None:
        self.r, self.queued, self.sizes = r, queued, []
        self.fail_round = -1

    def send(self, batch: Sequence[tuple[str, Sequence[str]]]) -> list[list[Any]]:
        self.sizes.append(len(batch))
        if len(self.sizes) == 1:
            wait_for(lambda: self.queued() == READERS - 1, 30, "the other readers to queue")
        if len(self.sizes) - 1 == self.fail_round:
            raise redis.ConnectionError("dropped")
        return fetch(self.r, batch)


def _threads(reads: Reads, results: dict[int, Any]) -> list[threading.Thread]:
    def reader(i: int) -> None:
        try:
            results[i] = reads.get("m1" if i % 2 else "m2", [f"b:{i}", "missing"])
        except redis.ConnectionError as exc:
            results[i] = exc

    threads = [threading.Thread(target=reader, args=(i,)) for i in range(READERS)]
    for t in threads:
        t.start()
    return threads


def test_threads_queued_behind_a_round_trip_share_the_next_one(r: redis.Redis) -> None:
    _fill(r)
    reads: Reads
    gate = Gate(r, lambda: len(reads._queued))
    reads = Reads(gate.send)
    results: dict[int, Any] = {}
    for t in _threads(reads, results):
        t.join(30)
    assert gate.sizes == [1, READERS - 1]  # the first alone, the 49 others in one round trip
    for i in range(READERS):
        assert results[i] == [str(i if i % 2 else 1000 + i).encode(), None]
    assert reads.get("m1", ["b:3"]) == [b"3"]  # idle again: a lone read is sent at once
    assert gate.sizes[-1] == 1


def test_an_error_reaches_the_callers_of_its_round_trip_only(r: redis.Redis) -> None:
    _fill(r)
    reads: Reads
    gate = Gate(r, lambda: len(reads._queued))
    gate.fail_round = 1
    reads = Reads(gate.send)
    results: dict[int, Any] = {}
    for t in _threads(reads, results):
        t.join(30)
    failed = [i for i, v in results.items() if isinstance(v, redis.ConnectionError)]
    assert len(failed) == READERS - 1
    assert reads.get("m2", ["b:4"]) == [b"1004"]


def test_asyncio_tasks_share_round_trips(redis_server: LocalRedis, r: redis.Redis) -> None:
    _fill(r)
    from redis import asyncio as aredis

    async def main() -> tuple[list[int], list[list[Any]]]:
        client = aredis.Redis.from_url(redis_server.url)
        sizes: list[int] = []

        async def send(batch: Sequence[tuple[str, Sequence[str]]]) -> list[list[Any]]:
            sizes.append(len(batch))
            return await afetch(client, batch)

        reads = AsyncReads(send)
        got = await asyncio.gather(
            *(reads.get("m1" if i % 2 else "m2", [f"b:{i}"]) for i in range(READERS))
        )
        await client.aclose()
        return sizes, list(got)

    sizes, got = asyncio.run(main())
    assert sizes == [READERS]  # queued in the same turn of the loop: one round trip
    assert got == [[str(i if i % 2 else 1000 + i).encode()] for i in range(READERS)]


def test_asyncio_error_fails_its_round_trip_and_the_next_works() -> None:
    calls = 0

    async def send(batch: Sequence[tuple[str, Sequence[str]]]) -> list[list[Any]]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise redis.ConnectionError("dropped")
        return [[b"x"] for _ in batch]

    async def main() -> list[Any]:
        reads = AsyncReads(send)
        first = await asyncio.gather(
            reads.get("k", ["a"]), reads.get("k", ["b"]), return_exceptions=True
        )
        return [*first, await reads.get("k", ["c"])]

    got = asyncio.run(main())
    assert [type(g) for g in got[:2]] == [redis.ConnectionError, redis.ConnectionError]
    assert got[2] == [b"x"]


def test_fetch_pipelines_several_hashes_in_one_round_trip(r: redis.Redis) -> None:
    _fill(r)
    before = int(r.info("stats")["total_commands_processed"])
    got = fetch(r, [("m1", ["b:1"]), ("m2", ["b:1", "b:2"]), ("m1", ["b:3"])])
    after = int(r.info("stats")["total_commands_processed"])
    assert got == [[b"1"], [b"1001", b"1002"], [b"3"]]
    assert after - before == 3  # two HMGETs and the INFO before them
