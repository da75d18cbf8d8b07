"""The online `reshard` command's parts (eventfleet/ops/reshard_online.py,
docs/DESIGN-DECISIONS.md section 35): its refusals and exit codes (nothing written when it
refuses), its bounded wait, its lease (two runs never both proceed; a run that lost its lease
writes nothing), the record of its target and of the counts at init, and the new shards' keys;
against the session's Redis without workers. Under workers: tests/test_reshard_command.py."""

from __future__ import annotations

import json

import pytest
import redis

from eventfleet.ledger.codec import decode
from eventfleet.ledger.events import Topup
from eventfleet.ledger.shards import ShardCounts, user_shard
from eventfleet.ledger.split import marker_text
from eventfleet.ops.reshard_online import (
    ReshardBusy,
    ReshardRefused,
    Run,
    check_growth,
    lease_key,
    new_shards,
)
from eventfleet.ops.reshard_progress import run_key
from eventfleet.producer.client import Producer
from eventfleet.store.keys import GROUP, Keys
from eventfleet.store.namespace import create_shards, init_namespace, read_counts
from tests.helpers import cli
from tests.secure_redis import connect


@pytest.mark.parametrize(
    ("users", "items", "why"),
    [
        (1, 2, "cannot shrink from 2 to 1"),
        (3, 2, "only grow by a multiple of 2, not to 3"),
        (4, 6, "only grow by a multiple of 4, not to 6"),
        (8192, 4, "at most 4096"),
        (2, 4, "nothing to do"),
    ],
)
def test_growth_must_be_a_multiple(users: int, items: int, why: str) -> None:
    with pytest.raises(ReshardRefused, match=why):
        check_growth(ShardCounts(2, 4), users, items)
    check_growth(ShardCounts(2, 4), 2, 8)
    check_growth(ShardCounts(2, 4), 6, 4)
    assert new_shards(ShardCounts(2, 4), 4, 8) == ["u2", "u3", "i4", "i5", "i6", "i7"]


def test_the_command_refuses_bad_counts_and_a_held_lease_before_writing(
    r: redis.Redis, env: dict[str, str], namespace: str
) -> None:
    cli("init", "--user-shards", "2", "--item-shards", "2", env=env)
    meta = r.hgetall(f"{namespace}:meta")
    for args, why in (
        (["--user-shards", "3"], "multiple of 2"),
        (["--item-shards", "1"], "cannot shrink"),
        (["--user-shards", "8192"], "at most 4096"),
        (["--user-shards", "2", "--item-shards", "2"], "nothing to do"),
        ([], "--user-shards"),
        (["--user-shards", "4", "export"], "without a subcommand"),
    ):
        res = cli("reshard", *args, env=env, check=False)
        assert res.returncode == 2 and why in res.stderr, (args, res.stderr)
    held = Run(r, Keys(namespace))
    held.take()
    res = cli("reshard", "--user-shards", "4", env=env, check=False)
    assert res.returncode == 1 and "holds the lease" in res.stderr, res.stderr
    held.release()
    assert r.hgetall(f"{namespace}:meta") == meta
    r.hset(f"{namespace}:meta", mapping={"reshard_target": "4,2", "reshard_state": "marked",
                                         "reshard_from": "two,2"})  # fmt: skip
    res = cli("reshard", "--user-shards", "4", env=env, check=False)
    assert res.returncode == 1 and "does not parse" in res.stderr, res.stderr
    r.delete(f"{namespace}:meta")
    r.hset(f"{namespace}:meta", mapping=meta)
    assert not r.exists(lease_key(Keys(namespace)))
    assert not r.exists(Keys(namespace).events("u2"))


def test_the_command_times_out_with_the_run_recorded_and_refuses_another_target(
    r: redis.Redis, env: dict[str, str], namespace: str
) -> None:
    """No worker applies the markers: past ``--wait`` the command exits 1, saying a re-run
    goes on, its lease let go and the counts not published; a run to another target is then
    refused (exit 2) before it writes anything."""
    cli("init", "--user-shards", "2", "--item-shards", "2", env=env)
    res = cli("reshard", "--user-shards", "4", "--wait", "0.3", env=env, check=False)
    assert res.returncode == 1, res.stderr
    assert "re-run the same command to go on waiting" in res.stderr
    assert "no seed yet for u2 u3" in res.stderr
    lines = [line for line in res.stderr.splitlines() if line.startswith("reshard: ")]
    assert lines[0] == "reshard: recorded 2,2 -> 4,2 (users,items)", lines
    assert "reshard: split markers appended: u0 u1 i0 i1" in lines
    keys = Keys(namespace)
    assert not r.exists(lease_key(keys))
    assert read_counts(r, keys) == ShardCounts(2, 2)
    for shard in ("u0", "u1", "i0", "i1"):  # each marker's entry id recorded for a re-run
        (eid, fields), *_ = r.xrange(keys.events(shard))
        assert fields[b"event"] == marker_text(4, 2).encode()
        assert r.hget(run_key(keys), f"marker:4,2:{shard}") == eid
    meta = r.hgetall(keys.meta)
    res = cli("reshard", "--user-shards", "8", env=env, check=False)
    assert res.returncode == 2 and "4 user and 2 item shards is not finished" in res.stderr
    assert r.hgetall(keys.meta) == meta and not r.exists(keys.events("u4"))
    res = cli("reshard", "--user-shards", "4", "--wait", "0", env=env, check=False)
    assert res.returncode == 1 and "continuing the run 2,2 -> 4,2" in res.stderr, res.stderr
    assert "split markers appended: - (4 held one" in res.stderr  # none twice


def test_a_run_killed_after_publishing_is_finished_by_a_re_run(
    r: redis.Redis, env: dict[str, str], namespace: str
) -> None:
    """Killed between publishing the counts and recording the run done: a re-run of the same
    command grows from the counts the run recorded (not the published ones, which would leave
    nothing to do), finds every marker and seed there, and records the run done."""
    cli("init", "--user-shards", "2", "--item-shards", "2", env=env)
    keys = Keys(namespace)
    assert cli("reshard", "--user-shards", "4", "--wait", "0", env=env, check=False).returncode
    for child in ("u2", "u3"):
        r.set(keys.snapshot(child), "{}")  # as the parents' owners seed them
    killed = Run(r, keys)
    killed.take()
    killed.publish(4, 2)
    r.delete(lease_key(keys))  # killed; its lease lapsed
    res = cli("reshard", "--user-shards", "4", "--json", env=env)
    assert "continuing the run 2,2 -> 4,2 (users,items), left published" in res.stderr
    assert json.loads(res.stdout)["from"] == "2,2"
    assert r.hget(keys.meta, "reshard_state") == b"done"
    res = cli("reshard", "--user-shards", "4", env=env, check=False)
    assert res.returncode == 2 and "nothing to do" in res.stderr


def test_two_runs_never_both_proceed_and_a_superseded_one_writes_nothing(
    r: redis.Redis, namespace: str
) -> None:
    keys = Keys(namespace)
    init_namespace(r, keys, ShardCounts(2, 2))
    first, second = Run(r, keys, ttl_ms=60_000), Run(r, keys, ttl_ms=60_000)
    first.take()
    with pytest.raises(ReshardBusy, match="holds the lease"):
        second.take()
    first.write_meta({"reshard_state": "a"})
    r.delete(lease_key(keys))  # first's lease lapsed (a pause past its TTL)
    second.take()
    with pytest.raises(ReshardBusy, match="lost the reshard lease"):
        first.write_meta({"reshard_state": "b"})
    with pytest.raises(ReshardBusy, match="lost the reshard lease"):
        first.renew()
    assert r.hget(keys.meta, "reshard_state") == b"a"
    second.write_meta({"reshard_state": "c"})
    first.release()  # not its lease any more: left alone
    assert r.get(lease_key(keys)) == second.token.encode()
    second.release()
    assert not r.exists(lease_key(keys))


def test_begin_records_the_target_and_init_counts_and_prepare_creates_the_new_shards(
    r: redis.Redis, namespace: str
) -> None:
    keys = Keys(namespace)
    current = ShardCounts(2, 2)
    init_namespace(r, keys, current)
    r.hset(keys.producers, "app", "eventfleet-producer-app")  # a registered identity
    run = Run(r, keys)
    run.take()
    run.begin(current, 4, 2)
    run.begin(current, 4, 2)  # a re-run continues
    meta = r.hgetall(keys.meta)
    assert meta[b"reshard_target"] == b"4,2" and meta[b"reshard_state"] == b"preparing"
    assert (meta[b"init_user_shards"], meta[b"init_item_shards"]) == (b"2", b"2")
    with pytest.raises(ReshardRefused, match="not finished"):
        run.begin(current, 8, 2)
    assert run.prepare(current, 4, 2) == ["u2", "u3"]
    assert run.prepare(current, 4, 2) == ["u2", "u3"]  # idempotent
    for shard in ("u2", "u3"):
        assert r.xinfo_groups(keys.events(shard))[0]["name"] == GROUP.encode()
        assert r.llen(keys.inbox(shard)) == 1 and r.llen(keys.inbox(shard, "app")) == 1
    assert not r.exists(keys.events("u4"))
    assert read_counts(r, keys) == current  # nothing published: workers see what they saw
    r.hset(keys.meta, "reshard_state", "done")
    run.begin(ShardCounts(4, 2), 8, 2)  # the next one, once the last is done
    assert r.hget(keys.meta, "init_user_shards") == b"2"  # kept from the first
    run.release()


@pytest.mark.redis  # a Redis of its own with the shipped ACL file
def test_the_lease_and_its_meta_writes_as_the_shipped_admin_user(port: int) -> None:
    admin, worker = connect(port, "admin"), connect(port, "worker")
    keys = Keys("eventfleet")
    admin.hset(keys.meta, mapping={"user_shards": 2, "item_shards": 2})
    run = Run(admin, keys)
    run.take()
    run.begin(ShardCounts(2, 2), 4, 4)
    assert admin.hget(keys.meta, "reshard_target") == "4,4"
    with pytest.raises(ReshardBusy):
        Run(worker, keys).take()
    run.release()
    assert not admin.exists(lease_key(keys))
    with pytest.raises(redis.exceptions.ResponseError, match=r"can.t access"):
        Run(worker, keys).take()  # only the admin may run a reshard
    assert not admin.exists(lease_key(keys))


def test_a_producer_learns_grown_counts_between_chunks(r: redis.Redis, namespace: str) -> None:
    """The counts grow (as the command will publish them, the new inboxes made first): the
    chunk already stamped goes where it was routed, the next ones to the new shards, each
    new shard's seqs going on from its parent's."""
    keys = Keys(namespace)
    init_namespace(r, keys, ShardCounts(2, 2))
    producer = Producer(r, keys, ShardCounts(2, 2), counts_every_s=0)
    users = range(1, 41)
    producer.publish([Topup(user_id=u, amount=1) for u in users])
    parents = dict(producer.seq)
    create_shards(r, keys, ["u2", "u3"])
    r.hset(keys.meta, "user_shards", 4)
    producer.publish([Topup(user_id=u, amount=1) for u in users], chunk=10)
    producer.publish_one(Topup(user_id=41, amount=1))
    assert producer.counts.users == 4
    grown = ShardCounts(4, 2)
    for child in ("u2", "u3"):
        parent = f"u{int(child[1:]) % 2}"
        direct = [decode(e) for e in r.lrange(keys.inbox(child), 1, -1)]
        stale = [
            decode(e)
            for e in r.lrange(keys.inbox(parent), 1, -1)
            if user_shard(decode(e).user_id, grown) == child  # type: ignore[union-attr]
        ]
        assert direct and stale, child
        seqs = [e.seq for e in direct]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
        # above all the source sent the parent for the child's keys, as its dedup needs
        assert seqs[0] > max(e.seq for e in stale) and seqs[0] > parents[parent]
        assert all(user_shard(e.user_id, grown) == child for e in direct)  # type: ignore[union-attr]
