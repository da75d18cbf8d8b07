"""The shipped Redis ACL file, against a real redis-server (see tests/secure_redis.py): who
may log in, and what the admin, producer and worker users may and may not send."""

from __future__ import annotations

import hashlib
import re

import pytest
import redis
from redis import exceptions as rx

from tests.secure_redis import (
    ACL_FILE,
    CONTRACTS,
    DLQ,
    EPOCH,
    EVENTS,
    GROUP,
    INBOX,
    ITEM_EVENTS,
    ITEM_INBOX,
    LEASE,
    META,
    NO_RETRY,
    OUTCOMES,
    POISON,
    ROOT,
    SCRIPT,
    SNAPSHOT,
    WORKERS,
    WRITTEN,
    connect,
    password,
    refused,
    send,
)


def test_default_user_is_off(port: int) -> None:
    anonymous = redis.Redis(host="127.0.0.1", port=port, retry=NO_RETRY)
    with pytest.raises(rx.AuthenticationError):
        anonymous.ping()
    with pytest.raises(rx.AuthenticationError):
        redis.Redis(host="127.0.0.1", port=port, password="anything", retry=NO_RETRY).ping()


@pytest.mark.parametrize("role", ["admin", "worker", "producer", "exporter", "reader", "api"])
def test_each_user_logs_in_with_its_demo_password_only(port: int, role: str) -> None:
    assert connect(port, role).ping() is True
    with pytest.raises(rx.AuthenticationError):
        connect(port, role, secret=password(role) + "x").ping()


def test_demo_passwords_match_the_acl_hashes() -> None:
    text = ACL_FILE.read_text(encoding="utf-8")
    for role in ("admin", "worker", "producer", "exporter", "reader", "api"):
        digest = hashlib.sha256(password(role).encode()).hexdigest()
        assert re.search(rf"^user eventfleet-{role} on #{digest} ", text, re.M), role
    assert ">" not in text, "no clear-text password belongs in the shipped ACL file"


def test_admin_can_initialise_the_namespace(port: int) -> None:
    admin = connect(port, "admin")
    assert admin.hsetnx(META, "user_shards", 4) == 1
    admin.hset(META, mapping={"item_shards": 4, "version": 1})
    for stream in (EVENTS, ITEM_EVENTS):
        assert admin.xgroup_create(stream, GROUP, id="0", mkstream=True)
        assert admin.xinfo_groups(stream)[0]["name"] == GROUP
    assert admin.hgetall(META) == {"user_shards": "4", "item_shards": "4", "version": "1"}
    admin.xadd(DLQ, {"event": "{}"})
    assert admin.xlen(DLQ) == 1


@pytest.mark.parametrize(
    "command",
    [("FLUSHALL",), ("FLUSHDB",), ("KEYS", "*"), ("CONFIG", "GET", "maxmemory"),
     ("ACL", "LIST"), ("SET", "other:key", "1"), ("GET", "other:key")],
    ids=lambda c: " ".join(c[:2]),
)  # fmt: skip
def test_admin_is_refused_dangerous_commands_and_foreign_keys(
    port: int, command: tuple[str, ...]
) -> None:
    assert refused(connect(port, "admin"), *command)


def test_producer_can_publish_and_read_the_shard_counts(port: int, seeded: dict[str, str]) -> None:
    producer = connect(port, "producer")
    for inbox in (INBOX, ITEM_INBOX, "eventfleet:{u123}:inbox", "eventfleet:{i1234}:inbox"):
        assert producer.rpushx(inbox, '{"type":"topup"}', '{"type":"order"}') == 3
    assert producer.rpushx("eventfleet:{u9}:inbox", "{}") == 0  # only inboxes that exist
    assert connect(port, "root").exists("eventfleet:{u9}:inbox") == 0
    assert producer.hgetall(META)["item_shards"] == "8"
    producer.client_setname("producer-test")
    assert send(producer, "WAIT", "0", "0") == 0
    # a chunk's entries for one shard are one RPUSHX: all or none without MULTI/EXEC
    assert refused(producer, "MULTI")
    # `produce order --wait` reads the outcome streams, and nothing else
    assert producer.xread({OUTCOMES: "0", "eventfleet:{u123}:outcomes": "0"}) == []
    assert refused(producer, "XRANGE", OUTCOMES, "-", "+")
    assert refused(producer, "XADD", OUTCOMES, "*", "outcome", "{}")


@pytest.mark.parametrize(
    "command",
    [
        ("GET", SNAPSHOT),
        ("DEL", SNAPSHOT),
        ("SET", SNAPSHOT, "{}"),
        ("XRANGE", EVENTS, "-", "+"),
        ("XREAD", "STREAMS", EVENTS, "0"),
        ("XREADGROUP", "GROUP", GROUP, "p", "STREAMS", EVENTS, ">"),
        ("XLEN", EVENTS),
        ("XADD", EVENTS, "*", "event", "{}"),
        ("XADD", EVENTS, "MAXLEN", "0", "*", "event", "{}"),
        ("XADD", EVENTS, "MINID", "99999999999999", "*", "event", "{}"),
        ("XADD", EVENTS, "18446744073709551615-18446744073709551615", "event", "{}"),
        ("XADD", INBOX, "*", "event", "{}"),
        ("XADD", "eventfleet:{u5}:events", "*", "event", "{}"),
        ("XTRIM", EVENTS, "MAXLEN", "0"),
        ("XADD", OUTCOMES, "*", "event", "{}"),
        ("XADD", DLQ, "*", "event", "{}"),
        ("RPUSH", INBOX, "{}"),
        ("RPUSH", "eventfleet:{u9}:inbox", "{}"),
        ("LPUSH", INBOX, "{}"),
        ("LPUSHX", INBOX, "{}"),
        ("LPOP", INBOX),
        ("RPOP", INBOX),
        ("LTRIM", INBOX, "0", "0"),
        ("LSET", INBOX, "0", "x"),
        ("LRANGE", INBOX, "0", "-1"),
        ("DEL", INBOX),
        ("RPUSHX", EVENTS, "{}"),
        ("RPUSHX", "eventfleet:{u0}:snapshot}:inbox", "{}"),
        ("RPUSHX", "eventfleet:{x1}:inbox", "{}"),
        ("RPUSHX", "other:{u0}:inbox", "{}"),
        ("HSET", META, "user_shards", "1"),
        ("EVAL", "return 1", "0"),
        ("FCALL", "anything", "0"),
    ],
    ids=lambda c: " ".join(c[:3]) if c[0] == "XADD" else f"{c[0]} {c[1]}",
)
def test_producer_is_refused_everything_else(
    port: int, seeded: dict[str, str], command: tuple[str, ...]
) -> None:
    assert refused(connect(port, "producer"), *command)


# One call per command the worker sends: docs/CONTRACTS.md's list (WORKER_EXTRA_CALLS holds
# any the code sends before the contract lists them).
WORKER_CALLS: dict[str, tuple[str, ...]] = {
    "PING": ("PING",),
    "HELLO": ("HELLO", "2"),
    "CLIENT SETNAME": ("CLIENT", "SETNAME", "acl-test"),
    "CLIENT ID": ("CLIENT", "ID"),
    "CLIENT LIST": ("CLIENT", "LIST", "ID", "1"),
    "TIME": ("TIME",),
    "HGETALL": ("HGETALL", META),
    "HGET": ("HGET", SNAPSHOT.replace("snapshot", "archived"), "events"),
    "COPY": ("COPY", SNAPSHOT, SNAPSHOT.replace("snapshot", "trimbase"), "REPLACE"),
    "XTRIM": ("XTRIM", EVENTS, "MINID", "0-0"),
    "GET": ("GET", SNAPSHOT),
    "SET": ("SET", LEASE, "w:1", "PX", "5000", "NX"),
    "DEL": ("DEL", LEASE),
    "INCR": ("INCR", EPOCH),
    "EVAL": ("EVAL", SCRIPT, "1", EVENTS),
    "EVALSHA": ("EVALSHA", "$SHA", "1", EVENTS),
    "SCRIPT LOAD": ("SCRIPT", "LOAD", SCRIPT),
    "XREADGROUP": ("XREADGROUP", "GROUP", GROUP, "w1", "COUNT", "10", "STREAMS", EVENTS, ">"),
    "XREAD": ("XREAD", "COUNT", "10", "STREAMS", EVENTS, "0"),
    "XADD": ("XADD", OUTCOMES, "*", "event", "{}"),
    "XACK": ("XACK", EVENTS, GROUP, "$ID"),
    "XAUTOCLAIM": ("XAUTOCLAIM", EVENTS, GROUP, "w2", "0", "0-0", "COUNT", "10"),
    "XRANGE": ("XRANGE", EVENTS, "-", "+"),
    "XREVRANGE": ("XREVRANGE", EVENTS, "+", "-", "COUNT", "1"),
    "XLEN": ("XLEN", EVENTS),
    "XINFO GROUPS": ("XINFO", "GROUPS", EVENTS),
    "XINFO CONSUMERS": ("XINFO", "CONSUMERS", EVENTS, GROUP),
    "XINFO STREAM": ("XINFO", "STREAM", EVENTS),
    "XPENDING": ("XPENDING", EVENTS, GROUP),
    "LRANGE": ("LRANGE", INBOX, "1", "10"),
    "HSET": ("HSET", SNAPSHOT.replace("snapshot", "model"), "b:1", "5"),
    "HDEL": ("HDEL", SNAPSHOT.replace("snapshot", "model"), "b:1"),
    "LLEN": ("LLEN", INBOX),
    "LTRIM": ("LTRIM", INBOX, "0", "-1"),
    "WAIT": ("WAIT", "0", "0"),
    "XGROUP DELCONSUMER": ("XGROUP", "DELCONSUMER", EVENTS, GROUP, "w-old"),
    "ZADD": ("ZADD", WORKERS, "1", "w1"),
    "ZREM": ("ZREM", WORKERS, "w1"),
    "ZRANGEBYSCORE": ("ZRANGEBYSCORE", WORKERS, "-inf", "+inf"),
    "ZREMRANGEBYSCORE": ("ZREMRANGEBYSCORE", WORKERS, "-inf", "0"),
    "EXISTS": ("EXISTS", LEASE),
    "PEXPIRE": ("PEXPIRE", LEASE, "5000"),
    "ZRANGE": ("ZRANGE", WORKERS, "0", "-1"),
    "ZSCORE": ("ZSCORE", WORKERS, "w1"),
    "SADD": ("SADD", POISON, "1-0"),
    "SMEMBERS": ("SMEMBERS", POISON),
    "SCRIPT EXISTS": ("SCRIPT", "EXISTS", "$SHA"),
}


WORKER_EXTRA_CALLS: dict[str, tuple[str, ...]] = {
    # a split parent's mark of what it forwarded to a child (inside forward_once.lua)
    "HSET forwarded": ("HSET", SNAPSHOT.replace("snapshot", "forwarded"), "u0", "5-0"),
}


def contract_command_list(who: str) -> list[str]:
    """Commands of one role from CONTRACTS.md's 'Commands the worker sends' paragraph."""
    text = " ".join(CONTRACTS.read_text(encoding="utf-8").split())
    patterns = {
        "worker": r"Commands the worker sends \(for ACLs\): (.*?)\. The producer:",
        "producer": r"The producer: (.*?)\. `init` additionally:",
        "init": r"`init` additionally: (.*?)\.",
    }
    match = re.search(patterns[who], text)
    assert match, f"CONTRACTS.md no longer lists the {who}'s commands the way this test reads"
    return [re.sub(r"\s*\(.*?\)", "", name).strip() for name in match.group(1).split(",")]


def test_every_contract_worker_command_is_exercised() -> None:
    listed = contract_command_list("worker")
    assert len(listed) > 20
    assert set(listed) == set(WORKER_CALLS), "keep WORKER_CALLS in step with CONTRACTS.md"


def resolve(call: tuple[str, ...], values: dict[str, str]) -> list[str]:
    return [values.get(part, part) for part in call]


@pytest.mark.parametrize("name", [*WORKER_CALLS, *WORKER_EXTRA_CALLS])
def test_worker_may_send_its_commands_on_namespace_keys(
    port: int, seeded: dict[str, str], name: str
) -> None:
    call = {**WORKER_CALLS, **WORKER_EXTRA_CALLS}[name]
    send(connect(port, "worker"), *resolve(call, seeded))


def test_worker_may_copy_a_snapshot_to_its_quarantine_only(
    port: int, seeded: dict[str, str]
) -> None:
    """A takeover keeps a snapshot that does not decode in NS:{f}:quarantine (COPY), and may
    read it back (GET) but not write or delete it otherwise."""
    worker = connect(port, "worker")
    quarantine = SNAPSHOT.replace("snapshot", "quarantine")
    send(worker, "COPY", SNAPSHOT, quarantine, "REPLACE")
    send(worker, "GET", quarantine)
    assert refused(worker, "COPY", SNAPSHOT, SNAPSHOT.replace("snapshot", "written"), "REPLACE")


def test_worker_may_read_its_group_inside_a_script(port: int, seeded: dict[str, str]) -> None:
    script = (
        "return redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', 10,"
        " 'STREAMS', KEYS[1], '>')"
    )
    worker = connect(port, "worker")
    read = worker.eval(script, 1, EVENTS, GROUP, "w-script")
    assert read[0][0] == EVENTS


def test_worker_may_run_registered_scripts_in_a_pipeline(port: int, seeded: dict[str, str]) -> None:
    worker = connect(port, "worker")
    count = worker.register_script(SCRIPT)
    pipe = worker.pipeline(transaction=False)
    count(keys=[EVENTS], client=pipe)
    pipe.xadd(OUTCOMES, {"event": "{}"})
    assert pipe.execute()[0] == 2


@pytest.mark.parametrize(
    "name",
    [n for n, c in {**WORKER_CALLS, **WORKER_EXTRA_CALLS}.items() if any(":" in p for p in c)],
)
def test_worker_is_refused_keys_outside_the_namespace(
    port: int, seeded: dict[str, str], name: str
) -> None:
    call = {**WORKER_CALLS, **WORKER_EXTRA_CALLS}[name]
    foreign = [part.replace("eventfleet:", "other:") for part in resolve(call, seeded)]
    assert refused(connect(port, "worker"), *foreign), f"{name} reached a foreign key"


@pytest.mark.parametrize(
    "command",
    [("FLUSHALL",), ("KEYS", "*"), ("CONFIG", "GET", "maxmemory"), ("HSET", META, "x", "1"),
     ("HSETNX", META, "x", "1"), ("XGROUP", "CREATE", DLQ, GROUP, "0", "MKSTREAM"),
     ("XDEL", EVENTS, "0-1"), ("XSETID", EVENTS, "9-9"), ("SCRIPT", "FLUSH"),
     ("SUBSCRIBE", "eventfleet:x"), ("ACL", "WHOAMI"),
     ("DEL", OUTCOMES), ("DEL", EVENTS), ("DEL", SNAPSHOT), ("DEL", DLQ), ("DEL", INBOX),
     ("SET", META, "x"), ("SET", OUTCOMES, "x"), ("SET", EVENTS, "x"), ("SET", EPOCH, "1"),
     ("XADD", META, "*", "a", "b"), ("XADD", SNAPSHOT, "*", "a", "b"),
     ("XADD", WORKERS, "*", "a", "b"), ("XACK", OUTCOMES, GROUP, "1-0"),
     ("XTRIM", SNAPSHOT, "MAXLEN", "0"), ("XTRIM", INBOX, "MAXLEN", "0"),
     ("COPY", EVENTS, SNAPSHOT), ("COPY", SNAPSHOT, OUTCOMES),
     ("COPY", SNAPSHOT.replace("snapshot", "quarantine"), SNAPSHOT, "REPLACE"),
     ("SET", SNAPSHOT.replace("snapshot", "quarantine"), "x"),
     ("DEL", SNAPSHOT.replace("snapshot", "quarantine")),
     ("INCR", LEASE), ("INCR", META), ("SADD", LEASE, "x"), ("PEXPIRE", SNAPSHOT, "1"),
     ("PEXPIRE", OUTCOMES, "1"), ("LTRIM", EVENTS, "0", "0"), ("RPUSH", INBOX, "x"),
     ("ZADD", LEASE, "1", "x"), ("ZREM", POISON, "x"), ("RENAME", EVENTS, WRITTEN),
     ("UNLINK", EVENTS), ("EXPIRE", EVENTS, "1"),
     ("HDEL", SNAPSHOT.replace("snapshot", "forwarded"), "u0"),
     ("DEL", SNAPSHOT.replace("snapshot", "forwarded")),
     ("HSET", SNAPSHOT.replace("snapshot", "lease"), "u0", "5-0")],
    ids=lambda c: " ".join(c[:2]),
)  # fmt: skip
def test_worker_is_refused_commands_it_does_not_need(
    port: int, seeded: dict[str, str], command: tuple[str, ...]
) -> None:
    assert refused(connect(port, "worker"), *command)


IDEM = "eventfleet:api:idem:0f3a9c1d2e4b5a6978c0d1e2:key-1"
"""An Idempotency-Key record of the HTTP API (eventfleet/api/idempotency.py: Keys)."""


def test_api_user_keeps_its_idempotency_records(port: int, seeded: dict[str, str]) -> None:
    """What eventfleet/api/ sends on its own login: the claim (SET NX GET EX), the answer
    (SET EX), dropping a failed claim (DEL), /readyz's EXISTS on meta, in one pipeline."""
    api = connect(port, "api")
    api.client_setname("eventfleet-api")
    assert api.ping() is True
    pipe = api.pipeline(transaction=False)
    claim = ("SET", IDEM, '{"state":"pending"}', "NX", "GET", "EX", "30")
    pipe.execute_command(*claim, get=True)  # type: ignore[no-untyped-call]
    pipe.execute_command(*claim, get=True)  # type: ignore[no-untyped-call]
    pipe.execute_command("SET", IDEM, '{"state":"done"}', "EX", "86400")  # type: ignore[no-untyped-call]
    pipe.exists(META)
    pipe.delete(IDEM)
    assert pipe.execute() == [None, '{"state":"pending"}', True, 1, 1]


@pytest.mark.parametrize(
    "command",
    [("GET", IDEM), ("HGETALL", META), ("HGET", META, "user_shards"), ("SET", META, "x"),
     ("DEL", META), ("EXISTS", INBOX), ("RPUSHX", INBOX, "{}"), ("LLEN", INBOX),
     ("XADD", EVENTS, "*", "event", "{}"), ("XREAD", "STREAMS", OUTCOMES, "0"),
     ("HGET", "eventfleet:{u0}:model", "balance"), ("GET", SNAPSHOT), ("DEL", SNAPSHOT),
     ("SET", "eventfleet:api:other", "x"), ("SET", "other:api:idem:x", "x"),
     ("EXPIRE", IDEM, "1"), ("KEYS", "*"), ("SCAN", "0"), ("EVAL", "return 1", "0"),
     ("MULTI",), ("FLUSHALL",)],
    ids=lambda c: " ".join(c[:2]),
)  # fmt: skip
def test_api_user_is_refused_the_ledger(
    port: int, seeded: dict[str, str], command: tuple[str, ...]
) -> None:
    assert refused(connect(port, "api"), *command)


def _table_commands(cell: str) -> set[str]:
    """The commands a SECURITY.md table cell names: its back-quoted upper-case words."""
    return {c for c in re.findall(r"`([A-Z][A-Z ]*[A-Z])`", cell)}


def _acl_commands(line: str) -> set[str]:
    """The commands a users.acl line allows outside its selectors, as SECURITY.md names them."""
    outside = re.sub(r"\([^)]*\)", "", line)
    return {c[1:].replace("|", " ").upper() for c in outside.split() if re.match(r"\+[a-z]", c)}


@pytest.mark.parametrize("user", ["producer", "exporter", "reader", "api"])
def test_security_table_lists_each_users_commands(user: str) -> None:
    """docs/SECURITY.md's table of users names exactly the commands the shipped file gives
    each user whose rights are a plain list (every key pattern, then ``-@all +<command>...``)."""
    table = (ROOT / "docs" / "SECURITY.md").read_text(encoding="utf-8")
    (row,) = [r for r in table.splitlines() if r.startswith(f"| `eventfleet-{user}` |")]
    commands_cell = row.split(" | ")[3]
    (line,) = [
        ln
        for ln in ACL_FILE.read_text(encoding="utf-8").splitlines()
        if ln.startswith(f"user eventfleet-{user} ")
    ]
    assert " -@all " in line, "a plain list starts from no command at all"
    assert _table_commands(commands_cell) == _acl_commands(line), row
