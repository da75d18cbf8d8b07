"""`eventfleet exporter`: every shard's backlog, owner and dead letters read from Redis alone,
owned or not; one pass per interval whatever the scrapers; hostile keys cost one shard's
gauges, never the exporter; user errors are one line."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import redis
from hypothesis import given
from hypothesis import strategies as st

from eventfleet.exporter.read import OTHER_REASON, _reason
from eventfleet.ledger.events import Topup
from eventfleet.ledger.rules import DEAD_LETTER_REASONS
from eventfleet.ledger.shards import user_shard
from eventfleet.local.fleet import LocalFleet
from eventfleet.local.redisserver import LocalRedis, free_port
from eventfleet.producer.client import Producer
from eventfleet.store.keys import EVENT_FIELD, GROUP, Keys
from tests.fleet_utils import append_to_logs, make_fleet, setup_namespace
from tests.helpers import cli_process, wait_for
from tests.live_exporter import LiveExporter, running_exporter
from tests.live_worker import Scrape, start, wait_idle, wait_ready


def settled(ex: LiveExporter, cond: Any, what: str, timeout: float = 30) -> Scrape:
    """The first scrape for which ``cond(scrape)`` holds."""
    found: list[Scrape] = []

    def check() -> bool:
        m = ex.scrape()
        if cond(m):
            found.append(m)
            return True
        return False

    wait_for(check, timeout, what)
    return found[0]


def test_the_exporter_reports_every_shard_owned_or_not(
    r: redis.Redis,
    redis_server: LocalRedis,
    namespace: str,
    env: dict[str, str],
    tmp_path: Path,
    fleet_factory: list[LocalFleet],
) -> None:
    counts = setup_namespace(r, namespace)
    shards = counts.all_shards()
    keys = Keys(namespace)
    shard = user_shard(1, counts)
    stream = keys.events(shard)
    # Another reader's group on the same stream must not be mistaken for the fleet's.
    r.xgroup_create(stream, "zz-audit", id="0")
    with running_exporter(env, tmp_path) as ex:
        # No worker at all: the backlog is there, per shard, with its age (entries in the log,
        # as the owner's moves leave them).
        append_to_logs(r, keys, counts, [Topup(user_id=1, amount=1)] * 50)
        m = settled(
            ex,
            lambda m: (
                m.by("eventfleet_shard_lag", "shard").get(shard) == 50
                and m.by("eventfleet_shard_lag_seconds", "shard")[shard] > 0
            ),
            "the backlog of a shard nobody owns",
        )
        assert set(m.by("eventfleet_shard_lag", "shard")) == set(shards)
        assert m.nonzero("eventfleet_shard_lag", "shard") == {shard: 50}
        assert m.by("eventfleet_shard_has_owner", "shard") == dict.fromkeys(shards, 0.0)
        assert m.total("eventfleet_shards") == len(shards)
        assert m.total("eventfleet_live_workers") == 0
        assert m.total("eventfleet_redis_used_memory_bytes") > 0
        assert m.total("eventfleet_redis_maxmemory_bytes") == int(
            r.config_get("maxmemory")["maxmemory"]
        )
        assert m.total("eventfleet_exporter_pass_ok") == 1
        for f in m.families.values():
            for sample in f.samples:
                assert sample.labels["eventfleet_namespace"] == namespace, sample

        # An operator's stray read: three entries delivered, not applied. Still lag; pending.
        r.xreadgroup(GROUP, "inspector", {stream: ">"}, count=3)
        m = settled(
            ex,
            lambda m: m.by("eventfleet_shard_pending", "shard").get(shard) == 3,
            "the stray read to show as pending",
        )
        assert m.by("eventfleet_shard_lag", "shard")[shard] == 50
        # Events still in the shard's inbox (published, not yet moved into the log) count too.
        Producer(r, keys, counts).publish([Topup(user_id=1, amount=1)] * 7)
        settled(
            ex,
            lambda m: m.by("eventfleet_shard_lag", "shard").get(shard) == 57,
            "the inbox in the lag",
        )

        # A worker takes every shard over (claiming the stray entries) and applies them.
        fleet = make_fleet(redis_server.url, namespace, tmp_path, fleet_factory)
        a = start(fleet)
        wait_ready(a)
        wait_idle(r, namespace, counts)
        m = settled(
            ex,
            lambda m: (
                m.by("eventfleet_shard_has_owner", "shard") == dict.fromkeys(shards, 1.0)
                and not m.nonzero("eventfleet_shard_lag", "shard")
                and m.total("eventfleet_live_workers") == 1
            ),
            "every shard owned and caught up",
        )
        assert not m.nonzero("eventfleet_shard_lag_seconds", "shard")
        assert not m.nonzero("eventfleet_shard_pending", "shard")
        epochs = m.by("eventfleet_shard_epoch", "shard")
        assert epochs == {s: float(r.get(keys.epoch(s)) or 0) for s in shards}
        assert all(e >= 1 for e in epochs.values())

        # A malformed entry: one dead letter, by shard and reason.
        r.xadd(keys.events("i1"), {EVENT_FIELD: b"{oops"})
        m = settled(
            ex,
            lambda m: m.nonzero("eventfleet_shard_dead_letters", "shard") == {"i1": 1},
            "the dead letter",
        )
        by_reason = m.samples("eventfleet_shard_dead_letters_by_reason")
        assert [(s.labels["shard"], s.labels["reason"], s.value) for s in by_reason] == [
            ("i1", "bad_json", 1.0)
        ]

        # The worker drains: nobody owns anything, nobody is alive.
        assert fleet.terminate(a.proc) == 0
        settled(
            ex,
            lambda m: (
                not m.nonzero("eventfleet_shard_has_owner", "shard")
                and m.total("eventfleet_live_workers") == 0
            ),
            "the exporter to see the fleet gone",
        )
        assert ex.proc.poll() is None


def commandstat(r: redis.Redis, command: str) -> int:
    stats: Any = r.info("commandstats")
    return int(stats.get(f"cmdstat_{command}", {}).get("calls", 0))


def test_one_pass_per_interval_whatever_the_number_of_scrapers(
    r: redis.Redis, namespace: str, env: dict[str, str], tmp_path: Path
) -> None:
    counts = setup_namespace(r, namespace, users=8, items=8)
    with running_exporter(env, tmp_path, interval_s=600) as ex:
        before = commandstat(r, "xinfo|groups")
        scrapes: list[Scrape] = []
        threads = [threading.Thread(target=lambda: scrapes.append(ex.scrape())) for _ in range(20)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert len(scrapes) == 20
        for m in scrapes:
            assert m.total("eventfleet_exporter_passes_total", outcome="ok") == 1
            assert len(m.by("eventfleet_shard_lag", "shard")) == len(counts.all_shards())
        # one XINFO GROUPS per shard, once: the twenty scrapes shared a single pass
        assert commandstat(r, "xinfo|groups") - before == len(counts.all_shards())


def test_hostile_keys_cost_one_shard_never_the_exporter(
    r: redis.Redis, namespace: str, env: dict[str, str], tmp_path: Path
) -> None:
    keys = Keys(namespace)
    with running_exporter(env, tmp_path) as ex:
        # No namespace yet: the pass fails, the exporter says so and keeps serving.
        m = settled(
            ex, lambda m: m.total("eventfleet_exporter_passes_total", outcome="failed") >= 1, "f"
        )
        assert m.total("eventfleet_exporter_pass_ok") == 0
        assert "eventfleet_shard_lag" not in m.families, "no shard gauges from a failed pass"
        assert "not initialised" in ex.log()

        counts = setup_namespace(r, namespace, users=2, items=2)
        r.set(keys.epoch("u0"), "not a number")
        r.delete(keys.events("u1"))
        r.set(keys.events("u1"), "a string where a stream belongs")
        r.set(keys.lease("i0"), "garbage without an epoch")
        dlq = keys.dlq("i1")
        r.xadd(dlq, {"reason": "bad_json"})
        r.xadd(dlq, {"reason": "made-up"})
        r.xadd(dlq, {"no": "reason"})
        m = settled(
            ex,
            lambda m: (
                m.total("eventfleet_exporter_pass_ok") == 1
                and m.total("eventfleet_shard_dead_letters", shard="i1") == 3
            ),
            "a pass over the damaged namespace",
        )
        assert set(m.by("eventfleet_shard_lag", "shard")) == {"i0", "i1"}
        assert m.total("eventfleet_exporter_unreadable_shards") == 2
        assert m.total("eventfleet_shards") == len(counts.all_shards())
        assert m.by("eventfleet_shard_has_owner", "shard") == {"i0": 1.0, "i1": 0.0}
        reasons = {
            s.labels["reason"]: s.value
            for s in m.samples("eventfleet_shard_dead_letters_by_reason")
        }
        assert reasons == {"bad_json": 1.0, OTHER_REASON: 2.0}

        # Dead letters are counted incrementally, by id: trimming the stream (retention)
        # or deleting it lowers nothing, new ones add up.
        r.xadd(dlq, {"reason": "wrong_shard"})
        settled(ex, lambda m: m.total("eventfleet_shard_dead_letters", shard="i1") == 4, "the 4th")
        r.xtrim(dlq, maxlen=1)
        r.xadd(dlq, {"reason": "handler_error"})
        m = settled(
            ex,
            lambda m: m.total("eventfleet_shard_dead_letters", shard="i1") == 5,
            "the 5th, after a trim",
        )
        assert m.by("eventfleet_shard_dead_letters_by_reason", "reason") == {
            "bad_json": 1,
            OTHER_REASON: 2,
            "wrong_shard": 1,
            "handler_error": 1,
        }
        assert ex.proc.poll() is None
        assert "Traceback" not in ex.log()


def test_exporter_user_errors_are_one_line(env: dict[str, str]) -> None:
    gone = {**env, "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}
    gone["EVENTFLEET_CONNECT_TIMEOUT_S"] = "0.5"
    out = cli_process("exporter", "--port", str(free_port()), env=gone, check=False, timeout=60)
    assert out.returncode == 2
    assert "unreachable" in out.stderr and "Traceback" not in out.stderr
    bad = cli_process("exporter", "--interval", "0", env=env, check=False)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr


@given(st.dictionaries(st.binary(max_size=8), st.binary(max_size=20), max_size=4))
def test_a_dead_letter_reason_is_always_a_bounded_label(fields: dict[bytes, bytes]) -> None:
    reason = _reason(fields)
    assert reason in DEAD_LETTER_REASONS or reason == OTHER_REASON
    if fields.get(b"reason", b"").decode(errors="replace") in DEAD_LETTER_REASONS:
        assert reason == fields[b"reason"].decode()
