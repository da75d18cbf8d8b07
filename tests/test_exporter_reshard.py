"""The exporter's gauges of an online reshard's progress (eventfleet/exporter/reshard.py),
against the session's Redis: meta written by the command's own steps (``Run``), the
children's seed snapshots set by hand as a parent's owner writes them, and at each state the
same split and waiting parents as ``eventfleet status`` shows; the labels bounded (family and
status, never a shard) whatever the shard counts; fields that do not parse cost the reshard's
gauges, never the pass."""

from __future__ import annotations

from typing import Any

import redis

from eventfleet.exporter.gauges import PassStats, families
from eventfleet.exporter.read import NamespaceReader, Reading
from eventfleet.ledger.shards import ShardCounts
from eventfleet.ops.reshard_online import Run
from eventfleet.ops.reshard_progress import progress
from eventfleet.store.keys import Keys
from tests.fleet_utils import setup_namespace

RESHARD = (
    "eventfleet_reshard_state",
    "eventfleet_reshard_target_shards",
    "eventfleet_reshard_from_shards",
    "eventfleet_reshard_parents",
    "eventfleet_reshard_running_seconds",
)


def served(namespace: str, reading: Reading) -> dict[str, dict[tuple[str, ...], float]]:
    """Reshard metric -> its label values other than the namespace's -> value."""
    out: dict[str, dict[tuple[str, ...], float]] = {}
    for family in families(namespace, reading, PassStats()):
        if family.name not in RESHARD:
            continue
        out[family.name] = {}
        for s in family.samples:
            assert s.labels.pop("eventfleet_namespace") == namespace
            assert set(s.labels) <= {"family", "status"}, s.labels
            out[family.name][tuple(s.labels.values())] = s.value
    return out


def parents(split: tuple[int, int], waiting: tuple[int, int]) -> dict[tuple[str, ...], float]:
    """The parents gauge: (user, item) split and (user, item) waiting."""
    return {
        ("user", "split"): split[0],
        ("user", "waiting"): waiting[0],
        ("item", "split"): split[1],
        ("item", "waiting"): waiting[1],
    }


def seed(r: redis.Redis, keys: Keys, *shards: str) -> None:
    for s in shards:
        r.set(keys.snapshot(s), b'{"shard": "%s"}' % s.encode())


def agrees_with_status(r: redis.Redis, keys: Keys, got: dict[str, Any]) -> None:
    """The split and waiting parents per family are those `eventfleet status` lists."""
    doc = progress(r, keys)
    assert doc is not None
    counted = {
        (fam, status): float(sum(1 for s in doc[status] if s[0] == fam[0]))
        for fam in ("user", "item")
        for status in ("split", "waiting")
    }
    assert got["eventfleet_reshard_parents"] == counted


def test_the_reshard_gauges_at_each_state(r: redis.Redis, namespace: str) -> None:
    keys = Keys(namespace)
    old = setup_namespace(r, namespace, users=2, items=2)
    reader = NamespaceReader(r, keys)

    # never resharded: the state is 0, nothing else is served
    got = served(namespace, reader.read())
    assert got["eventfleet_reshard_state"] == {(): 0}
    for name in RESHARD[1:]:
        assert got[name] == {}, name

    # 2+2 -> 4+6: u0 -> u0 u2, u1 -> u1 u3; i0 -> i0 i2 i4, i1 -> i1 i3 i5
    run = Run(r, keys)
    run.take()
    run.begin(old, 4, 6)
    (t_s, t_us) = r.time()
    reading = reader.read()
    got = served(namespace, reading)
    assert got["eventfleet_reshard_state"] == {(): 1}
    assert got["eventfleet_reshard_target_shards"] == {("user",): 4, ("item",): 6}
    assert got["eventfleet_reshard_from_shards"] == {("user",): 2, ("item",): 2}
    assert got["eventfleet_reshard_parents"] == parents(split=(0, 0), waiting=(2, 2))
    (seconds,) = got["eventfleet_reshard_running_seconds"].values()
    begun = int(r.hget(keys.meta, "reshard_begun_ms") or 0)
    assert 0 <= seconds <= (t_s * 1000 + t_us // 1000 - begun) / 1000 + 5
    agrees_with_status(r, keys, got)

    run.prepare(old, 4, 6)
    assert run.mark(old, 4, 6) == ["u0", "u1", "i0", "i1"]
    got = served(namespace, reader.read())
    assert got["eventfleet_reshard_state"] == {(): 2}
    assert got["eventfleet_reshard_parents"] == parents(split=(0, 0), waiting=(2, 2))

    # u0's owner applied its marker; i0's wrote one of its two seeds: i0 is still waited for
    seed(r, keys, "u2", "i2")
    reading = reader.read()
    got = served(namespace, reading)
    assert got["eventfleet_reshard_parents"] == parents(split=(1, 0), waiting=(1, 2))
    # the seeded children have their shard gauges before the counts are published
    assert [s.shard for s in reading.shards] == ["u0", "u1", "i0", "i1", "u2", "i2"]
    assert reading.shard_count == 4 and not reading.unreadable
    agrees_with_status(r, keys, got)
    seed(r, keys, "i4", "u3")
    got = served(namespace, reader.read())
    assert got["eventfleet_reshard_parents"] == parents(split=(2, 1), waiting=(0, 1))
    agrees_with_status(r, keys, got)
    seed(r, keys, "i3", "i5")
    got = served(namespace, reader.read())
    assert got["eventfleet_reshard_parents"] == parents(split=(2, 2), waiting=(0, 0))
    agrees_with_status(r, keys, got)

    # published: the counts are the new ones, the run still grows from 2+2
    run.publish(4, 6)
    reading = reader.read()
    got = served(namespace, reading)
    assert got["eventfleet_reshard_state"] == {(): 3}
    assert got["eventfleet_reshard_from_shards"] == {("user",): 2, ("item",): 2}
    assert got["eventfleet_reshard_parents"] == parents(split=(2, 2), waiting=(0, 0))
    assert reading.shard_count == 10

    run.finish()
    run.release()
    got = served(namespace, reader.read())
    assert got["eventfleet_reshard_state"] == {(): 0}
    for name in RESHARD[1:]:
        assert got[name] == {}, name


def test_a_family_that_does_not_grow_and_many_shards_keep_the_labels_bounded(
    r: redis.Redis, namespace: str
) -> None:
    """64+64 -> 128+64: four parents series whatever the shard counts, the item family's 0."""
    keys = Keys(namespace)
    old = setup_namespace(r, namespace, users=64, items=64)
    run = Run(r, keys)
    run.take()
    run.begin(old, 128, 64)
    seed(r, keys, *(f"u{n}" for n in range(64, 100)))
    got = served(namespace, NamespaceReader(r, keys).read())
    assert got["eventfleet_reshard_parents"] == parents(split=(36, 0), waiting=(28, 0))
    assert got["eventfleet_reshard_target_shards"] == {("user",): 128, ("item",): 64}
    assert sum(len(series) for series in got.values()) == 1 + 2 + 2 + 4 + 1
    agrees_with_status(r, keys, got)


def test_reshard_fields_that_do_not_parse_cost_only_the_reshard_gauges(
    r: redis.Redis, namespace: str
) -> None:
    keys = Keys(namespace)
    setup_namespace(r, namespace, users=2, items=2)
    reader = NamespaceReader(r, keys)
    for fields in (
        {"reshard_target": "4,4", "reshard_state": "halfway"},
        {"reshard_target": "four,4", "reshard_state": "marked", "reshard_from": "2,2"},
        {"reshard_target": "4,4", "reshard_state": "marked", "reshard_from": "2"},
        {"reshard_target": "4,4", "reshard_state": "marked", "reshard_begun_ms": "soon"},
    ):
        r.hset(keys.meta, mapping=fields)
        reading = reader.read()
        assert reading.reshard is None, fields
        assert served(namespace, reading) == {}, fields
        assert len(reading.shards) == 4 and not reading.unreadable
        r.hdel(keys.meta, *fields)
    r.hset(keys.meta, mapping={"reshard_target": "4,4", "reshard_state": "done"})
    assert served(namespace, reader.read())["eventfleet_reshard_state"] == {(): 0}


def test_a_seed_snapshot_is_all_that_tells_a_split(r: redis.Redis, namespace: str) -> None:
    """Another key of the child (its stream, made by ``prepare``) is no seed: the child has
    no split counted and no shard gauge until its seed exists."""
    keys = Keys(namespace)
    old = ShardCounts(1, 1)
    setup_namespace(r, namespace, users=1, items=1)
    run = Run(r, keys)
    run.take()
    run.begin(old, 2, 1)
    run.prepare(old, 2, 1)
    reader = NamespaceReader(r, keys)
    reading = reader.read()
    got = served(namespace, reading)
    assert got["eventfleet_reshard_parents"] == parents(split=(0, 0), waiting=(1, 0))
    assert [s.shard for s in reading.shards] == ["u0", "i0"], "no shard gauge before its seed"
    seed(r, keys, "u1")
    reading = reader.read()
    got = served(namespace, reading)
    assert got["eventfleet_reshard_parents"] == parents(split=(1, 0), waiting=(0, 0))
    assert [s.shard for s in reading.shards] == ["u0", "i0", "u1"]
