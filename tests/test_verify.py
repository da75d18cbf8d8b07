"""``eventfleet verify`` against logs written by real workers, clean and with planted errors.

One data set is built per module by a real fleet on a Redis of this module: a first phase
applied and snapshotted, the workers SIGKILLed, a second phase applied by a new worker that
never snapshots. So the snapshots sit in the middle of the logs and verify must compare them
at their own offsets. Each test copies that data set into a fresh namespace and, where it
plants an error, plants it there.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from eventfleet.cli.verify import render
from eventfleet.ledger.codec import encode
from eventfleet.ledger.events import Release, Topup
from eventfleet.ledger.shards import ShardCounts, item_shard, user_shard
from eventfleet.ledger.state import ShardState
from eventfleet.local.fleet import LocalFleet
from eventfleet.local.redisserver import LocalRedis
from eventfleet.ops.status import is_idle
from eventfleet.ops.verify import verify
from eventfleet.producer.client import Producer
from eventfleet.producer.workload import mixed
from eventfleet.store.keys import EVENT_FIELD, Keys
from eventfleet.store.namespace import init_namespace
from tests.helpers import cli, wait_for

BASE = "vbase"
COUNTS = ShardCounts(4, 4)


def _snapshots_at_tail(r: redis.Redis, keys: Keys) -> bool:
    for s in COUNTS.all_shards():
        snap: Any = r.get(keys.snapshot(s))
        tail = r.xinfo_stream(keys.events(s))["last-generated-id"].decode()
        if snap is None or json.loads(snap)["last_id"] != tail:
            return False
    return True


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRedis]:
    server = LocalRedis().start()
    r = redis.Redis.from_url(server.url)
    keys = Keys(BASE)
    init_namespace(r, keys, COUNTS)
    logs = tmp_path_factory.mktemp("verify-logs")
    fleet = LocalFleet(server.url, BASE, logs, env={"EVENTFLEET_SNAPSHOT_INTERVAL_S": "0.3"})
    late = LocalFleet(
        server.url, BASE, logs, env={"EVENTFLEET_SNAPSHOT_INTERVAL_S": "3600"}, name="late"
    )
    try:
        for _ in range(2):
            fleet.start()
        Producer(r, keys, COUNTS).publish(mixed(2000, seed=5, users=60, items=12))
        wait_for(lambda: is_idle(r, keys, COUNTS), 60, "phase 1 applied")
        wait_for(lambda: _snapshots_at_tail(r, keys), 30, "snapshots of phase 1")
        for w in fleet.live():
            fleet.kill(w)
        Producer(r, keys, COUNTS).publish(mixed(1000, seed=6, users=60, items=12))
        late.start()
        wait_for(lambda: is_idle(r, keys, COUNTS), 60, "phase 2 applied")
        for w in late.live():
            late.kill(w)  # no final snapshot: the snapshots stay in the middle of the logs
        yield server
    finally:
        fleet.stop_all(timeout=10)
        late.stop_all(timeout=10)
        r.close()
        server.close()


@pytest.fixture
def copy(data: LocalRedis) -> Iterator[tuple[redis.Redis, Keys, dict[str, str]]]:
    """A fresh namespace holding a copy of the data set, and the env to run the CLI on it."""
    ns = f"v{uuid.uuid4().hex[:8]}"
    r = redis.Redis.from_url(data.url)
    for key in r.scan_iter(match=f"{BASE}:*"):
        r.copy(key, ns + key.decode()[len(BASE) :])
    yield r, Keys(ns), {"REDIS_URL": data.url, "EVENTFLEET_NAMESPACE": ns}
    for key in r.scan_iter(match=f"{ns}:*"):
        r.delete(key)
    r.close()


def run_verify(env: dict[str, str]) -> tuple[int, dict[str, Any], str]:
    """``eventfleet verify --json`` (exit code and report), and the readable diff in-process."""
    as_json = cli("verify", "--json", env=env, check=False)
    r = redis.Redis.from_url(env["REDIS_URL"])
    text = "\n".join(render(verify(r, Keys(env["EVENTFLEET_NAMESPACE"]), COUNTS)))
    r.close()
    return as_json.returncode, json.loads(as_json.stdout), text


def snapshot_of(r: redis.Redis, keys: Keys, shard: str) -> ShardState:
    raw: Any = r.get(keys.snapshot(shard))
    return ShardState.from_snapshot(raw, shard)


def test_verify_passes_on_a_clean_run(copy: tuple[redis.Redis, Keys, dict[str, str]]) -> None:
    r, keys, env = copy
    code, doc, text = run_verify(env)
    assert code == 0, text
    assert doc["ok"] and doc["quiescent"] and not doc["unchecked"]
    assert (doc["mismatches"], doc["lost"], doc["duplicates_applied"]) == (0, 0, 0)
    assert doc["invariant_violations"] == 0
    t = doc["totals"]
    assert t["topups"] == t["balances"] + t["confirmed_amount"] > 0
    assert t["added"] == t["remain"] + t["confirmed_qty"] > 0
    assert set(t["outcomes"]) == {"confirmed", "insufficient_funds", "out_of_stock", "unknown_item"}
    assert sum(t["outcomes"].values()) == t["orders"]
    # every snapshot was compared, and at least one in the middle of its log
    assert {s["snapshot"] for s in doc["shards"]} == {"match"}
    mid = [
        s
        for s in COUNTS.all_shards()
        if snapshot_of(r, keys, s).last_id
        != r.xinfo_stream(keys.events(s))["last-generated-id"].decode()
    ]
    assert mid, "the data set should hold snapshots taken before the end of their logs"
    shown = cli("verify", env=env)
    assert "OK: state, snapshots, outcomes and emitted events match the log" in shown.stdout


def test_verify_catches_a_snapshot_edited_by_hand(
    copy: tuple[redis.Redis, Keys, dict[str, str]],
) -> None:
    r, keys, env = copy
    shard = next(s for s in ("u0", "u1", "u2", "u3") if snapshot_of(r, keys, s).balances)
    st = snapshot_of(r, keys, shard)
    uid = sorted(st.balances)[0]
    st.balances[uid] += 100
    r.set(keys.snapshot(shard), st.to_snapshot())
    code, doc, text = run_verify(env)
    assert code == 3  # EXIT_DIFFERENCES
    assert doc["mismatches"] == 1 and not doc["ok"]
    (finding,) = doc["findings"]
    assert finding["shard"] == shard and finding["what"].startswith("snapshot @")
    assert f"balances[{uid}]: snapshot {st.balances[uid]}, log {st.balances[uid] - 100}" in text
    assert f"{shard} snapshot @{st.last_id}:" in text


def test_verify_reports_a_negative_balance_in_a_snapshot(
    copy: tuple[redis.Redis, Keys, dict[str, str]],
) -> None:
    r, keys, env = copy
    st = snapshot_of(r, keys, "u1")
    st.balances[999_999] = -5
    r.set(keys.snapshot("u1"), st.to_snapshot())
    code, doc, text = run_verify(env)
    assert code == 3  # EXIT_DIFFERENCES
    assert doc["invariant_violations"] == 1 and doc["mismatches"] == 1
    assert "u1 balance:" in text and "user 999999 has -5" in text


def _outcomes(r: redis.Redis, keys: Keys, shard: str) -> list[Any]:
    entries: Any = r.xrange(keys.outcomes(shard))
    return list(entries)


def test_verify_catches_a_deleted_outcome(copy: tuple[redis.Redis, Keys, dict[str, str]]) -> None:
    r, keys, env = copy
    eid, fields = _outcomes(r, keys, "u2")[3]
    outcome = json.loads(fields[b"outcome"])
    order_id, user_id = outcome["order_id"], outcome["user_id"]
    r.xdel(keys.outcomes("u2"), eid)
    code, doc, text = run_verify(env)
    assert code == 3  # EXIT_DIFFERENCES
    assert doc["lost"] == 1 and doc["invariant_violations"] == 1
    assert f"seq {int(fields[b'seq'])} missing: log gives {order_id}" in text
    assert "u2 outcomes:" in text
    assert f"order {order_id} of user {user_id}: 0 outcome(s) stored for 1 order(s)" in text


def test_verify_catches_a_duplicated_outcome(
    copy: tuple[redis.Redis, Keys, dict[str, str]],
) -> None:
    r, keys, env = copy
    _eid, fields = _outcomes(r, keys, "u3")[-1]
    r.xadd(keys.outcomes("u3"), fields)  # the same record appended twice
    code, doc, text = run_verify(env)
    assert code == 3  # EXIT_DIFFERENCES
    assert doc["duplicates_applied"] == 1 and doc["invariant_violations"] == 1
    assert f"u3 outcomes:\n  duplicate: seq {int(fields[b'seq'])} stored twice" in text


def test_verify_reports_damaged_outcome_records_without_crashing(
    copy: tuple[redis.Redis, Keys, dict[str, str]],
) -> None:
    r, keys, env = copy
    r.xadd(keys.outcomes("u1"), {"seq": "999999"})  # no outcome field
    r.xadd(keys.outcomes("u1"), {"seq": "x", "outcome": "{"})  # neither readable
    code, _doc, text = run_verify(env)
    assert code == 3  # EXIT_DIFFERENCES, not a traceback
    assert "a damaged outcome record" in text
    state = cli("state", "all", "--json", env=env)
    assert state.returncode == 0, state.stderr


def test_verify_catches_an_event_no_log_emitted(
    copy: tuple[redis.Redis, Keys, dict[str, str]],
) -> None:
    """A release that u0 never emitted, slipped into an item stream: stock appears from
    nowhere (conservation breaks) and the entry is not justified by u0's log."""
    r, keys, env = copy
    folds = verify(r, keys, COUNTS).folds
    item = sorted(folds["i0"].state.items)[0]
    dest = item_shard(item, COUNTS)
    seq = folds["u0"].state.out_seq.get(dest, 0) + 1
    fake = Release(order_id="o-planted", item_id=item, qty=3)
    r.xadd(keys.events(dest), {EVENT_FIELD: encode(fake, "u0", seq)})
    # a worker would have applied and acked it: move the group past it so the fleet is idle
    r.xgroup_setid(keys.events(dest), "workers", "$")
    code, doc, text = run_verify(env)
    assert code == 3, text  # EXIT_DIFFERENCES
    assert doc["duplicates_applied"] == 1
    assert doc["invariant_violations"] == 1
    assert "not an event u0's log emits" in text
    assert "added" in text and "remain" in text


def test_verify_on_a_busy_fleet_skips_what_is_still_in_flight(
    copy: tuple[redis.Redis, Keys, dict[str, str]],
) -> None:
    r, keys, env = copy
    ev = Topup(user_id=7, amount=10)
    r.xadd(keys.events(user_shard(7, COUNTS)), {EVENT_FIELD: encode(ev, "p:late", 1)})
    code, doc, _text = run_verify(env)
    assert code == 0
    assert not doc["quiescent"]
    assert any("not idle" in u for u in doc["unchecked"])


def test_verify_starts_from_a_snapshot_when_the_log_was_trimmed(
    copy: tuple[redis.Redis, Keys, dict[str, str]],
) -> None:
    r, keys, env = copy
    kept = snapshot_of(r, keys, "u1").last_id
    r.xtrim(keys.events("u1"), minid=kept, approximate=False)
    r.delete(keys.snapshot("i2"))
    first: Any = r.xrange(keys.events("i2"), count=2)
    r.xtrim(keys.events("i2"), minid=first[1][0], approximate=False)
    code, doc, text = run_verify(env)
    # u1's trim is covered by its snapshot; i2 lost an entry nothing covers: that is damage
    assert code == 3, text
    assert doc["lost"] == 1 and "i2 log:\n  lost: 1 entries deleted from the log" in text
    rows = {s["shard"]: s for s in doc["shards"]}
    assert rows["u1"]["from"] == f"snapshot {kept}"
    assert "i2" not in rows
    unchecked = "\n".join(doc["unchecked"])
    assert "u1:" in unchecked and "folded from its snapshot" in unchecked
    assert "conservation and one outcome per order: not checked" in unchecked


def test_verify_in_process_counts_what_each_source_applied(
    copy: tuple[redis.Redis, Keys, dict[str, str]],
) -> None:
    r, keys, _env = copy
    report = verify(r, keys, COUNTS)
    assert report.ok
    producers = {
        src for f in report.folds.values() for src in f.applied_seqs if src.startswith("p:")
    }
    assert len(producers) == 2
    applied = sum(f.applied_by(p) for f in report.folds.values() for p in producers)
    assert applied == 3000


def test_verify_needs_no_write_access(copy: tuple[redis.Redis, Keys, dict[str, str]]) -> None:
    """Read-only: the data set is byte for byte the same after a run."""
    r, keys, env = copy

    def lasting() -> dict[bytes, Any]:  # leases copied with their TTL may lapse meanwhile
        return {
            k: r.dump(k) for k in sorted(r.scan_iter(match=f"{keys.ns}:*")) if int(r.pttl(k)) == -1
        }

    before = lasting()
    run_verify(env)
    assert lasting() == before
