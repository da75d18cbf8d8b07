"""Every Lua script of ``eventfleet/store/lua`` run directly against one real Redis with the shipped ACL
file (tests/secure_redis.py), as the user that runs it in production: the worker user for the
worker's scripts, the admin user for ``init``'s, the archive's and the bench's. Each script's
normal result and its refusals (fencing, held leases, marks that never go back, duplicates).

The worker's scripts run both ways the worker loads them: EVALSHA (a single Redis) and EVAL
with the text (Redis Cluster), each also queued on a pipeline where the worker does so."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import redis
from redis import exceptions as rx

from eventfleet.bench.loop_mixed import ORDER, queue_order
from eventfleet.ledger.bundle import MAX_EVENTS, MAX_PACK_CHARS, split
from eventfleet.ledger.codec import MAX_ENTRY_BYTES
from eventfleet.ops.archive.writer import raise_mark
from eventfleet.store import lua
from eventfleet.store.keys import GROUP, INBOX_HEAD, Keys
from eventfleet.store.scripts import EvalScript, create_inbox
from eventfleet.worker import scripts as worker_scripts
from eventfleet.worker.scripts import Scripts, is_blocked, is_fenced
from tests.secure_redis import connect

K = Keys("eventfleet")
S = "u0"
TOKEN = "w1:1"
MAX_ID = "18446744073709551615-18446744073709551615"


@dataclass
class Users:
    root: redis.Redis
    """The fixture's superuser: sets up data and looks at what the scripts wrote."""
    worker: redis.Redis
    admin: redis.Redis


@pytest.fixture
def u(port: int) -> Iterator[Users]:
    users = Users(*(connect(port, role) for role in ("root", "worker", "admin")))
    yield users
    for client in (users.root, users.worker, users.admin):
        client.close()


@pytest.fixture(params=["evalsha", "eval"])
def scripts(request: pytest.FixtureRequest, u: Users, monkeypatch: pytest.MonkeyPatch) -> Scripts:
    """The worker's scripts on the worker user's client: EVALSHA as on a single Redis, or
    EVAL with the text as on Redis Cluster."""
    if request.param == "eval":
        monkeypatch.setattr(worker_scripts, "load_script", EvalScript)
    return Scripts(u.worker)


def group(root: redis.Redis) -> None:
    """The shard's stream, its group and its inbox as ``init`` leaves them."""
    root.xgroup_create(K.events(S), GROUP, id="0", mkstream=True)
    root.rpush(K.inbox(S), INBOX_HEAD)


def read(scripts: Scripts, client: Any, token: str = TOKEN, **kw: Any) -> Any:
    args = {"consumer": "w1", "count": 100, "start": ">", "applied_to": "0-0", "move_limit": 1000}
    args.update(kw)
    return scripts.fenced_read(
        client, lease=K.lease(S), events=K.events(S), inbox=K.inbox(S), token=token, **args
    )


def event(i: int, pad: int = 0) -> str:
    return json.dumps({"type": "topup", "user_id": i, "amount": 1, "pad": "x" * pad})


def texts(entries: Any) -> list[str]:
    """The event texts of read entries, bundles split, in order."""
    return [t.decode() for _eid, flat in entries for t in split(flat[1].encode())]


# ---------------------------------------------------------------- the loader


def test_flags_line_stays_first_and_pieces_are_joined_whole() -> None:
    for name in ("acquire", "save_snapshot", "heartbeat", "retain", "raise_mark"):
        text = lua.source(name, lua.PRELUDE)
        assert text.startswith("#!lua flags=allow-oom\n"), name
        assert text.count("#!lua") == 1
        assert lua.read(lua.PRELUDE) in text
        assert text.endswith(lua.read(name).partition("\n")[2])
    assert lua.source("renew") == lua.read("renew")
    assert lua.source("xadd_many", lua.MOVE_INBOX) == lua.read("move_inbox") + lua.read("xadd_many")
    with pytest.raises(ValueError, match="not a shared piece"):
        lua.source("renew", "acquire")


def test_every_lua_file_is_a_known_script_or_piece() -> None:
    scripts = {
        "acquire", "renew", "release", "save_snapshot", "fenced_read", "xadd_many",
        "append_once", "mark_written", "heartbeat", "retain", "tail", "register", "expel",
        "create_inbox", "raise_mark", "bench_loop_order", "write_model", "reshard_meta",
        "forward_once",
    }  # fmt: skip
    assert set(lua.names()) == scripts | lua.PIECES
    for name in lua.names():
        assert lua.read(name).endswith("\n"), f"{name}.lua: a piece must end with a newline"


# ---------------------------------------------------------------- leases


def test_acquire_takes_a_free_lease_and_refuses_a_held_one(scripts: Scripts, u: Users) -> None:
    worker, root = u.worker, u.root

    def acquire(wid: str, **kw: Any) -> Any:
        return scripts.acquire(
            worker, lease=K.lease(S), epoch=K.epoch(S), worker_id=wid, ttl_ms=5000, **kw
        )

    assert acquire("w1") == 1
    assert root.get(K.lease(S)) == "w1:1"
    assert 0 < root.pttl(K.lease(S)) <= 5000
    assert acquire("w2") == "w1:1"  # held: the holder's token, nothing written
    assert acquire("w1") == "w1:1"  # held by ourselves, without reclaim: refused too
    assert (root.get(K.lease(S)), root.get(K.epoch(S))) == ("w1:1", "1")
    assert acquire("w2", breakable=["w9"]) == "w1:1"  # not the holder: no break
    assert acquire("w1", reclaim=True) == 2  # an earlier process of the same member
    assert root.get(K.lease(S)) == "w1:2"
    assert acquire("w2", breakable=["w3", "w1"]) == [3, "w1:2"]  # a gone worker's lease
    assert root.get(K.lease(S)) == "w2:3"
    pipe = worker.pipeline(transaction=False)  # as the worker sends it: one per shard
    for s in ("u1", "u2", "u1"):
        scripts.acquire(pipe, lease=K.lease(s), epoch=K.epoch(s), worker_id="w1", ttl_ms=5000)
    assert pipe.execute() == [1, 1, "w1:1"]


def test_renew_and_release_only_by_the_holder(scripts: Scripts, u: Users) -> None:
    worker, root = u.worker, u.root
    lease = K.lease(S)
    assert scripts.renew(worker, lease=lease, token=TOKEN, ttl_ms=5000) == 0  # no lease
    assert not root.exists(lease)
    root.set(lease, TOKEN, px=1000)
    assert scripts.renew(worker, lease=lease, token="w2:1", ttl_ms=60_000) == 0
    assert root.pttl(lease) <= 1000
    assert scripts.renew(worker, lease=lease, token=TOKEN, ttl_ms=60_000) == 1
    assert root.pttl(lease) > 1000
    assert scripts.release(worker, lease=lease, token="w1:2") == 0  # an older or newer epoch
    assert root.get(lease) == TOKEN
    assert scripts.release(worker, lease=lease, token=TOKEN) == 1
    assert not root.exists(lease)
    assert scripts.release(worker, lease=lease, token=TOKEN) == 0


def test_save_snapshot_only_by_the_holder(scripts: Scripts, u: Users) -> None:
    worker, root = u.worker, u.root
    root.set(K.lease(S), TOKEN)
    snap = dict(lease=K.lease(S), snapshot=K.snapshot(S))
    assert scripts.save_snapshot(worker, token="w2:2", data="stale", **snap) == 0
    assert not root.exists(K.snapshot(S))
    assert scripts.save_snapshot(worker, token=TOKEN, data="state", **snap) == 1
    assert root.get(K.snapshot(S)) == "state"


def test_heartbeat_adds_prunes_and_lists_with_redis_time(scripts: Scripts, u: Users) -> None:
    worker, root = u.worker, u.root
    root.zadd(K.workers, {"dead": 1})  # expired long ago
    now, live = scripts.heartbeat(worker, workers=K.workers, worker_id="w1", ttl_ms=5000)
    assert live[0] == "w1" and int(live[1]) == now + 5000
    assert len(live) == 2
    seconds, micros = root.time()
    assert abs(now - (seconds * 1000 + micros // 1000)) < 5000
    now2, live2 = scripts.heartbeat(worker, workers=K.workers, worker_id="", ttl_ms=5000)
    assert now2 >= now and live2 == live  # '': prune only


# ---------------------------------------------------------------- the log


def test_fenced_read_refuses_a_stale_token_and_moves_nothing(scripts: Scripts, u: Users) -> None:
    worker, root = u.worker, u.root
    group(root)
    root.set(K.lease(S), "w1:2")
    root.rpush(K.inbox(S), event(1))
    root.xadd(K.events(S), {"event": event(2)})
    with pytest.raises(rx.ResponseError, match=r"^FENCED"):
        read(scripts, worker, token=TOKEN)
    pipe = worker.pipeline(transaction=False)
    read(scripts, pipe, token=TOKEN)
    (reply,) = pipe.execute(raise_on_error=False)
    assert is_fenced(reply) and not is_blocked(reply)
    assert root.llen(K.inbox(S)) == 2 and root.xlen(K.events(S)) == 1
    assert root.xpending(K.events(S), GROUP)["pending"] == 0
    root.delete(K.lease(S))
    with pytest.raises(rx.ResponseError, match=r"^FENCED"):
        read(scripts, worker, token=TOKEN)  # no lease at all


def test_fenced_read_moves_the_inbox_in_order_then_reads(scripts: Scripts, u: Users) -> None:
    worker, root = u.worker, u.root
    group(root)
    root.set(K.lease(S), TOKEN)
    logged = root.xadd(K.events(S), {"event": event(0)})
    nested = json.dumps({"type": "topup", "meta": {"a": 1}})
    pushed = [event(1), event(2), nested, event(3), "not json"]
    root.rpush(K.inbox(S), *pushed)
    head = root.lindex(K.inbox(S), 0)
    pipe = worker.pipeline(transaction=False)
    read(scripts, pipe)
    (got,) = pipe.execute()
    assert got[0][0] == logged
    assert texts(got) == [event(0), *pushed]
    # flat objects joined into bundles; the nested one and the non-JSON one alone
    moved = [flat for _eid, flat in got[1:]]
    assert [f[1] for f in moved] == [f"[{event(1)},{event(2)}]", nested, event(3), "not json"]
    # the inbox chain: each entry's last element, and the head the move started from
    lasts = [event(2), nested, event(3), "not json"]
    assert [f[2:6] for f in moved] == [["via", "inbox", "tail", sha1(x)] for x in lasts]
    assert moved[0][6:] == ["head", sha1(head)] and all(len(f) == 6 for f in moved[1:])
    # the list's first element is never moved (the head, then the last element moved): the
    # key stays, so producers' RPUSHX keeps appending
    assert root.lrange(K.inbox(S), 0, -1) == ["not json"]
    assert read(scripts, worker, applied_to=got[-1][0]) == []  # nothing moved twice


def test_fenced_read_hands_back_pending_entries_after_the_applied_one(
    scripts: Scripts, u: Users
) -> None:
    worker, root = u.worker, u.root
    group(root)
    root.set(K.lease(S), TOKEN)
    ids = [root.xadd(K.events(S), {"event": event(i)}) for i in range(4)]
    assert [e[0] for e in read(scripts, worker, count=3)] == ids[:3]  # the reply is lost
    root.rpush(K.inbox(S), event(9))
    assert [e[0] for e in read(scripts, worker, applied_to=ids[0])] == ids[1:3]
    assert root.llen(K.inbox(S)) == 2  # pending entries first: the inbox waits
    assert [e[0] for e in read(scripts, worker, start="0-0", count=1)] == ids[:1]
    nxt = read(scripts, worker, applied_to=ids[2])
    assert [e[0] for e in nxt][:1] == ids[3:] and texts(nxt) == [event(3), event(9)]


def test_fenced_read_bundles_within_the_limits(scripts: Scripts, u: Users) -> None:
    worker, root = u.worker, u.root
    group(root)
    root.set(K.lease(S), TOKEN)
    many = [event(i) for i in range(MAX_EVENTS + 5)]
    big = [event(i, pad=MAX_PACK_CHARS // 3) for i in range(4)]
    huge = event(0, pad=MAX_ENTRY_BYTES)  # a flat object over the entry limit: alone
    pushed = [*many, *big, huge]
    root.rpush(K.inbox(S), *pushed)
    got = read(scripts, worker, count=1000)
    assert texts(got) == pushed
    sizes = [len(split(flat[1].encode())) for _eid, flat in got]
    assert sizes[0] == MAX_EVENTS
    assert all(len(flat[1]) <= MAX_PACK_CHARS + 2 for _eid, flat in got[:-1])
    assert got[-1][1][1] == huge
    assert sizes == [MAX_EVENTS, 5 + 2, 2, 1]  # three big ones would pass MAX_PACK_CHARS


def test_fenced_read_moves_at_most_the_move_limit(scripts: Scripts, u: Users) -> None:
    worker, root = u.worker, u.root
    group(root)
    root.set(K.lease(S), TOKEN)
    pushed = [f"x{i}" for i in range(10)]  # not JSON: one entry each
    root.rpush(K.inbox(S), *pushed)
    assert texts(read(scripts, worker, move_limit=3)) == pushed[:3]
    assert root.lrange(K.inbox(S), 1, -1) == pushed[3:]


def test_fenced_read_says_blocked_when_the_log_takes_no_entry(scripts: Scripts, u: Users) -> None:
    worker, root = u.worker, u.root
    group(root)
    root.set(K.lease(S), TOKEN)
    root.xadd(K.events(S), {"event": "last"}, id=MAX_ID)
    root.xgroup_setid(K.events(S), GROUP, "$")
    root.rpush(K.inbox(S), event(1))
    pipe = worker.pipeline(transaction=False)
    read(scripts, pipe)
    (reply,) = pipe.execute(raise_on_error=False)
    assert is_blocked(reply) and not is_fenced(reply)
    assert root.lrange(K.inbox(S), 0, -1) == ["head", event(1)]  # nothing lost


def test_xadd_many_moves_the_inbox_first_then_appends(scripts: Scripts, u: Users) -> None:
    worker, root = u.worker, u.root
    group(root)
    root.rpush(K.inbox(S), event(1), event(2), event(3))
    head = root.lindex(K.inbox(S), 0)
    pipe = worker.pipeline(transaction=False)
    scripts.xadd_many(
        pipe, events=K.events(S), inbox=K.inbox(S), move_limit=2, texts=["a", "b", "c"]
    )
    assert pipe.execute() == [3]
    entries = root.xrange(K.events(S))
    bundle = {"event": f"[{event(1)},{event(2)}]", "via": "inbox", "tail": sha1(event(2))}
    bundle["head"] = sha1(head)
    assert [f for _eid, f in entries] == [bundle, *({"event": x} for x in "abc")]
    assert root.lrange(K.inbox(S), 1, -1) == [event(3)]


def test_append_once_skips_what_the_stream_has(scripts: Scripts, u: Users) -> None:
    worker, root = u.worker, u.root
    out = K.outcomes(S)

    def outcomes(*seqs: int) -> list[Any]:
        return [x for s in seqs for x in (s, "outcome", f"o{s}")]

    assert scripts.append_once(worker, stream=out, fields=1, records=outcomes(1, 2)) == 2
    assert scripts.append_once(worker, stream=out, fields=1, records=outcomes(1, 2, 3)) == 1
    assert scripts.append_once(worker, stream=out, fields=1, records=outcomes(2)) == 0
    assert [f for _eid, f in root.xrange(out)] == [
        {"seq": str(s), "outcome": f"o{s}"} for s in (1, 2, 3)
    ]
    dlq = K.dlq(S)
    letter = ["entry_id", "1-0", "reason", "bad", "event", "{}", "error", "e", "deliveries", "1"]
    pipe = worker.pipeline(transaction=False)
    scripts.append_once(pipe, stream=dlq, fields=5, records=[1, *letter, 2, *letter])
    scripts.append_once(pipe, stream=dlq, fields=5, records=[2, *letter])
    assert pipe.execute() == [2, 0]
    fields = dict(zip(letter[::2], letter[1::2], strict=True))
    assert root.xrange(dlq)[1][1] == {"seq": "2", **fields}


def test_mark_written_only_rises(scripts: Scripts, u: Users) -> None:
    worker, root = u.worker, u.root

    def mark(upto: str) -> Any:
        return scripts.mark_written(worker, written=K.written(S), upto=upto)

    assert mark("9-5") == 1
    assert mark("9-4") == 0  # backwards: refused
    assert mark("9-5") == 0
    assert mark("10-0") == 1  # by number, not text
    assert mark("9-9") == 0
    assert root.get(K.written(S)) == "10-0"


# ---------------------------------------------------------------- retention and standbys


def retain(scripts: Scripts, worker: redis.Redis, token: str = TOKEN, **kw: Any) -> Any:
    args = {"snapshot_id": "3-0", "snapshot_ms": 4, "window_ms": 0, "wait_for_archive": False}
    args.update(kw)
    names = ("lease", "events", "outcomes", "dlq", "snapshot", "trim_base", "archived")
    keys = {name: getattr(K, name)(S) for name in names}
    return scripts.retain(worker, token=token, **keys, **args)


def test_retain_trims_below_the_snapshot_and_keeps_the_last_record(
    scripts: Scripts, u: Users
) -> None:
    worker, root = u.worker, u.root
    root.set(K.lease(S), TOKEN)
    root.set(K.snapshot(S), "snap")
    for i in range(1, 6):
        root.xadd(K.events(S), {"event": str(i)}, id=f"{i}-0")
    for i in range(1, 4):
        root.xadd(K.outcomes(S), {"seq": str(i)}, id=f"{i}-0")
    root.xadd(K.dlq(S), {"seq": "1"}, id="1-0")
    assert retain(scripts, worker, token="w2:9") == -1  # fenced: nothing goes
    assert root.xlen(K.events(S)) == 5 and not root.exists(K.trim_base(S))
    assert retain(scripts, worker, wait_for_archive=True) == [0, 0, 0]  # nothing archived
    root.hset(K.archived(S), mapping={"events": "2-0"})
    assert retain(scripts, worker, wait_for_archive=True) == [1, 0, 0]  # up to the mark
    assert root.get(K.trim_base(S)) == "snap"
    root.delete(K.archived(S))
    assert retain(scripts, worker) == [1, 2, 0]  # events below 3-0; outcomes below 4 ms
    assert [e for e, _f in root.xrange(K.events(S))] == ["3-0", "4-0", "5-0"]
    assert [e for e, _f in root.xrange(K.outcomes(S))] == ["3-0"]  # the last one stays
    assert root.xlen(K.dlq(S)) == 1


def test_tail_reads_only_acked_entries(scripts: Scripts, u: Users) -> None:
    worker, root = u.worker, u.root

    def tail(after: str = "0-0") -> Any:
        pipe = worker.pipeline(transaction=False)
        scripts.tail(pipe, events=K.events(S), poison=K.poison(S), after=after, count=10)
        return pipe.execute()[0]

    root.xadd(K.events(S), {"event": "x"})
    assert tail() == []  # no group
    root.xgroup_create(K.events(S), GROUP, id="$")
    ids = [root.xadd(K.events(S), {"event": str(i)}) for i in range(3)]
    root.xreadgroup(GROUP, "w1", {K.events(S): ">"}, count=3)
    root.xack(K.events(S), GROUP, ids[0])
    root.sadd(K.poison(S), ids[2])
    entries, poison, deleted, first = tail()
    assert [e[0] for e in entries][-1] == ids[0]  # up to the oldest pending entry
    assert poison == [ids[2]] and (deleted, first) == ("0-0", "0-0")
    root.xack(K.events(S), GROUP, ids[1], ids[2])
    assert [e[0] for e in tail(ids[0])[0]] == ids[1:]
    root.xdel(K.events(S), ids[2])
    root.xtrim(K.events(S), minid=ids[1], approximate=False)
    _entries, _poison, deleted, first = tail()
    assert (deleted, first) == (ids[2], ids[1])


# ---------------------------------------------------------------- liveness


# ---------------------------------------------------------------- init, archive, bench


def test_create_inbox_leaves_an_existing_key_alone(u: Users) -> None:
    admin, root = u.admin, u.root
    assert create_inbox(admin, inbox=K.inbox(S), head=INBOX_HEAD) == 1
    root.rpush(K.inbox(S), "e")
    assert create_inbox(admin, inbox=K.inbox(S), head=INBOX_HEAD) == 0
    assert root.lrange(K.inbox(S), 0, -1) == ["head", "e"]


def test_raise_mark_never_lowers(u: Users) -> None:
    admin, root = u.admin, u.root
    raise_mark(admin, K, S, "events", "5-0")
    raise_mark(admin, K, S, "events", "4-9")
    raise_mark(admin, K, S, "dlq", "1-0")
    raise_mark(admin, K, S, "dlq", "10-0")
    assert root.hgetall(K.archived(S)) == {"events": "5-0", "dlq": "10-0"}


def test_bench_order_takes_stock_and_balance_or_rejects(u: Users) -> None:
    admin, root = u.admin, u.root
    keys = ["eventfleet:loop:stock", "eventfleet:loop:price", "eventfleet:loop:balance"]
    out = "eventfleet:loop:outcomes"
    root.hset(keys[0], "i1", 2)
    root.hset(keys[1], "i1", 10)
    root.hset(keys[2], "1", 25)
    sha = admin.script_load(ORDER)
    pipe = admin.pipeline(transaction=False)
    for order, (item, qty) in enumerate([("i1", 1), ("i9", 1), ("i1", 5), ("i1", 1), ("i1", 1)]):
        queue_order(
            pipe, sha, stock=keys[0], price=keys[1], balance=keys[2], outcomes=out,
            item=item, user="1", qty=qty, order=f"o{order}",
        )  # fmt: skip
    assert pipe.execute() == [1, 0, 0, 1, 0]
    reasons = [f.get("reason", f["status"]) for _eid, f in root.xrange(out)]
    assert reasons == ["confirmed", "unknown_item", "out_of_stock", "confirmed", "out_of_stock"]
    assert (root.hget(keys[0], "i1"), root.hget(keys[2], "1")) == ("0", "5")


# ---------------------------------------------------------------- flags


def test_allow_oom_scripts_run_when_redis_is_full(scripts: Scripts, u: Users) -> None:
    """The bookkeeping scripts carry ``#!lua flags=allow-oom`` as their first line; the
    writes that grow the data are refused at maxmemory."""
    worker, admin, root = u.worker, u.admin, u.root
    group(root)
    root.set(K.snapshot(S), "snap")
    root.config_set("maxmemory", 1)
    try:
        lease = dict(lease=K.lease(S), epoch=K.epoch(S))
        assert scripts.acquire(worker, worker_id="w1", ttl_ms=5000, **lease) == 1
        snap = dict(lease=K.lease(S), snapshot=K.snapshot(S), token=TOKEN)
        assert scripts.save_snapshot(worker, data="s2", **snap) == 1
        assert scripts.heartbeat(worker, workers=K.workers, worker_id="w1", ttl_ms=5000)
        assert retain(scripts, worker) == [0, 0, 0]
        raise_mark(admin, K, S, "events", "1-0")
        with pytest.raises(rx.OutOfMemoryError):
            scripts.append_once(worker, stream=K.outcomes(S), fields=1, records=[1, "o", "x"])
        with pytest.raises(rx.OutOfMemoryError):
            scripts.xadd_many(
                worker, events=K.events(S), inbox=K.inbox(S), move_limit=1, texts=["a"]
            )
    finally:
        root.config_set("maxmemory", 0)
    assert root.hget(K.archived(S), "events") == "1-0"
    assert root.xlen(K.outcomes(S)) == 0 and root.xlen(K.events(S)) == 0


def sha1(text: str) -> str:
    """The inbox chain's digest of an element (``eventfleet/store/lua/move_inbox.lua``)."""
    return hashlib.sha1(text.encode()).hexdigest()
