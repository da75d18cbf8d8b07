"""Hostile entries in a real shard log, applied by a real worker and read by ``verify`` and
``state``: only the bad entry is dead-lettered, its neighbours apply, no tool crashes, memory
stays bounded. The entries are written here with full rights (as an admin could); what the
producer's credentials can write at all is tested in ``tests/test_producer_acl.py``.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import redis

from eventfleet.ledger import codec
from eventfleet.ledger.codec import encode
from eventfleet.ledger.events import MAX_INT, AddItem, Order, Topup
from eventfleet.ledger.rules import step
from eventfleet.ledger.shards import ShardCounts, destination, item_shard
from eventfleet.ledger.state import ShardState
from eventfleet.local.fleet import LocalFleet
from eventfleet.local.redisserver import LocalRedis
from eventfleet.store import fold as store_fold
from eventfleet.store.keys import EVENT_FIELD, GROUP, Keys
from eventfleet.store.namespace import init_namespace
from eventfleet.worker.scripts import Scripts
from eventfleet.worker.takeover import take_over
from tests.fleet_utils import make_fleet, setup_namespace
from tests.helpers import cli, cli_json
from tests.live_worker import wait_idle

NESTED = ("[" * 30_000, "[" * 100_000)


def _add(r: redis.Redis, keys: Keys, counts: ShardCounts, text: str, shard: str) -> str:
    return r.xadd(keys.events(shard), {EVENT_FIELD: text}).decode()  # type: ignore[union-attr]


def _limited_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """The CLI with its address space capped at 1.5 GB: a range built from a seq of 10^12
    cannot fit, a fold of a few entries easily does."""

    def cap() -> None:
        limit = 1536 * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    return subprocess.run(
        [sys.executable, "-m", "eventfleet", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=cap,
        check=False,
    )


def test_deep_nesting_between_two_topups_dead_letters_only_itself(
    r: redis.Redis,
    redis_server: LocalRedis,
    namespace: str,
    env: dict[str, str],
    tmp_path: Path,
    fleet_factory: list[LocalFleet],
) -> None:
    counts = setup_namespace(r, namespace)
    keys = Keys(namespace)
    first, last = Topup(user_id=5, amount=10), Topup(user_id=5, amount=32)
    shard = destination(first, counts)
    _add(r, keys, counts, encode(first, "p:a", 1), shard)
    bad = [_add(r, keys, counts, text, shard) for text in NESTED]
    _add(r, keys, counts, encode(last, "p:a", 2), shard)
    make_fleet(redis_server.url, namespace, tmp_path, fleet_factory).start()
    wait_idle(r, namespace, counts)
    letters = r.xrange(keys.dlq(shard))
    assert [(f[b"entry_id"].decode(), f[b"reason"].decode()) for _, f in letters] == [
        (bad[0], "bad_json"),
        (bad[1], "too_large"),
    ]
    assert all(len(f[b"raw"]) <= codec.MAX_ENTRY_BYTES for _, f in letters)
    state = cli_json("state", "all", "--json", env=env)
    assert state["users"]["5"] == {"balance": 42}
    out = cli("verify", env=env)
    assert "RecursionError" not in out.stdout + out.stderr
    cli("dlq", "list", env=env)


def test_an_order_whose_amount_overflows_is_rejected_with_stock_untouched(
    r: redis.Redis,
    redis_server: LocalRedis,
    namespace: str,
    env: dict[str, str],
    tmp_path: Path,
    fleet_factory: list[LocalFleet],
) -> None:
    counts = setup_namespace(r, namespace)
    keys = Keys(namespace)
    add = AddItem(item_id="gold", count=5, price=MAX_INT)
    order = Order(order_id="big", user_id=3, item_id="gold", qty=2)
    shard = item_shard("gold", counts)
    _add(r, keys, counts, encode(add, "p:a", 1), shard)
    _add(r, keys, counts, encode(order, "p:a", 2), shard)
    make_fleet(redis_server.url, namespace, tmp_path, fleet_factory).start()
    wait_idle(r, namespace, counts)
    outcome = cli_json("state", "order", "big", "--json", env=env)["outcome"]
    assert (outcome["status"], outcome["reason"]) == ("rejected", "amount_too_large")
    items = cli_json("state", "all", "--json", env=env)["items"]
    assert items["gold"]["remain"] == 5
    assert r.xlen(keys.dlq(shard)) == 0
    cli("verify", env=env)


def test_verify_on_a_seq_of_ten_to_the_twelve_is_bounded_and_a_gap_is_not_lost(
    r: redis.Redis, namespace: str, env: dict[str, str]
) -> None:
    counts = setup_namespace(r, namespace)
    keys = Keys(namespace)
    top = Topup(user_id=9, amount=1)
    shard = destination(top, counts)
    state = ShardState(shard)
    for seq in (1, 5, 10**12):  # gaps: allowed by the protocol
        eid = _add(r, keys, counts, encode(top, "p:gappy", seq), shard)
        step(state, eid, encode(top, "p:gappy", seq), counts)
    state.entries = 3  # as an owner's fold counts them (step alone does not)
    # the entries are in the log but no worker ran: make the group's view match
    r.xreadgroup(GROUP, "reader", {keys.events(shard): ">"})
    r.xack(keys.events(shard), GROUP, *[e for e, _ in r.xrange(keys.events(shard))])
    r.set(keys.snapshot(shard), state.to_snapshot())
    run = _limited_cli(env, "verify", "--json")
    assert run.returncode == 0, run.stderr[-2000:]
    report = json.loads(run.stdout)
    assert report["ok"] and report["lost"] == 0


def test_the_poison_rule_dead_letters_only_the_entry_that_kills_its_owners(
    r: redis.Redis, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three top-ups delivered to an owner that died; the middle one kills every owner that
    applies it (simulated by an exception out of the fold, as a process death would stop it).
    Takeover after takeover, only that one ends up dead-lettered; its neighbours apply."""
    counts = ShardCounts(1, 1)
    keys = Keys(namespace)
    init_namespace(r, keys, counts)
    stream = keys.events("u0")
    texts = [encode(Topup(user_id=1, amount=a), "p:n", i + 1) for i, a in enumerate((1, 2, 4))]
    eids = [r.xadd(stream, {EVENT_FIELD: t}).decode() for t in texts]  # type: ignore[union-attr]
    r.xreadgroup(GROUP, "first-owner", {stream: ">"})
    killer = eids[1]
    real = store_fold.step

    class Died(BaseException):
        pass

    def dying(state: ShardState, eid: str, raw: Any, c: ShardCounts, **kw: Any) -> Any:
        if eid == killer:
            raise Died(eid)
        return real(state, eid, raw, c, **kw)

    monkeypatch.setattr(store_fold, "step", dying)
    scripts = Scripts.register(r)
    state = None
    for attempt in range(30):
        try:
            state, _ = take_over(r, keys, scripts, "u0", f"owner-{attempt}", counts, 4)
            break
        except Died:
            continue
    assert state is not None, "no takeover got past the killing entry"
    assert state.balances == {1: 5}
    assert {m.decode() for m in r.smembers(keys.poison("u0"))} == {killer}
    letters = [(f[b"entry_id"].decode(), f[b"reason"]) for _, f in r.xrange(keys.dlq("u0"))]
    assert letters == [(killer, b"max_deliveries")]
