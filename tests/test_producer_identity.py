"""Producer identities against the shipped ACL file, through the documented commands: one
producer's credentials cannot make another's events be dropped, pre-empted or attributed to it
(a claimed ``--source``, a re-used idempotency key, a pre-claimed re-drive source), and
``producers add / list / remove`` manage them (names checked, ``--json``, nothing lost on
remove). The migration of a namespace made before identities: tests/test_producer_upgrade.py.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import redis

from eventfleet.ledger.shards import ShardCounts, user_shard
from eventfleet.ops.status import is_idle
from eventfleet.store.keys import Keys
from tests.secure_redis import cli_env, connect, ok, run_cli, wait_for
from tests.test_producer_acl import worker

COUNTS = ShardCounts(2, 2)
KEYS = Keys("eventfleet")


def admin_env(port: int) -> dict[str, str]:
    return cli_env(f"redis://127.0.0.1:{port}/0", "admin")


def init(port: int) -> dict[str, str]:
    admin = admin_env(port)
    ok(run_cli(admin, "init", "--user-shards", "2", "--item-shards", "2"))
    return admin


def identity_env(admin: dict[str, str], name: str) -> dict[str, str]:
    """``producers add NAME --json`` as the admin; the environment of a process that uses
    nothing but the printed REDIS_URL."""
    doc = json.loads(ok(run_cli(admin, "producers", "add", name, "--json")))
    assert set(doc) == {"name", "redis_url"} and doc["name"] == name
    env = {k: v for k, v in admin.items() if k not in ("EVENTFLEET_REDIS_USERNAME",)}
    env.pop("REDIS_PASSWORD_FILE", None)
    env["REDIS_URL"] = doc["redis_url"]
    return env


def balances(admin: dict[str, str]) -> dict[str, Any]:
    state = json.loads(ok(run_cli(admin, "state", "all", "--json")))
    return {u: v["balance"] for u, v in state["users"].items()}


def wait_idle(root: redis.Redis) -> None:
    wait_for("the fleet to become idle", lambda: is_idle(root, KEYS, COUNTS), 90)


def topups(path: Path, rows: list[dict[str, Any] | None]) -> Path:
    path.write_text("".join((json.dumps(r) if r else "") + "\n" for r in rows))
    return path


def test_a_claimed_source_cannot_drop_the_honest_producers_events(
    port: int, tmp_path: Path
) -> None:
    admin = init(port)
    honest, hostile = identity_env(admin, "nightly-job"), identity_env(admin, "intruder")
    # the hostile producer claims the honest one's source name with seqs far ahead of its own
    far = topups(
        tmp_path / "far.jsonl", [None] * 5000 + [{"type": "topup", "user_id": 1, "amount": 1}]
    )
    ok(run_cli(hostile, "produce", "file", str(far), "--source", "nightly"))
    mine = [{"type": "topup", "user_id": u, "amount": 10} for u in (1, 2, 3, 4) for _ in range(5)]
    ok(
        run_cli(
            honest,
            "produce",
            "file",
            str(topups(tmp_path / "mine.jsonl", mine)),
            "--source",
            "nightly",
        )
    )
    root = connect(port, "root")
    with worker(port, tmp_path):
        wait_idle(root)
        got = balances(admin)
        assert got == {"1": 51, "2": 50, "3": 50, "4": 50}  # every honest top-up, and the 1
        # the honest file again (a retry): each line still once
        ok(run_cli(honest, "produce", "file", str(tmp_path / "mine.jsonl"), "--source", "nightly"))
        wait_idle(root)
        assert balances(admin) == got
    assert json.loads(ok(run_cli(admin, "verify", "--json")))["ok"]


def test_a_reused_idempotency_key_does_not_drop_the_honest_write(port: int, tmp_path: Path) -> None:
    admin = init(port)
    honest, hostile = identity_env(admin, "billing"), identity_env(admin, "intruder")
    ok(run_cli(hostile, "produce", "topup", "--user", "7", "--amount", "1", "--key", "pay-42"))
    ok(run_cli(honest, "produce", "topup", "--user", "7", "--amount", "500", "--key", "pay-42"))
    ok(run_cli(honest, "produce", "topup", "--user", "7", "--amount", "500", "--key", "pay-42"))
    root = connect(port, "root")
    with worker(port, tmp_path):
        wait_idle(root)
        assert balances(admin) == {"7": 501}  # the honest +500 once, the intruder's +1 once
    assert json.loads(ok(run_cli(admin, "verify", "--json")))["ok"]


def test_a_preclaimed_redrive_source_cannot_make_a_redrive_credit_zero(
    port: int, tmp_path: Path
) -> None:
    admin = init(port)
    hostile = identity_env(admin, "intruder")
    as_legacy = connect(port, "producer")  # the old shared user
    right = user_shard(5, COUNTS)
    wrong = next(s for s in ("u0", "u1") if s != right)
    # 30 top-ups pushed into the wrong shard's inbox: dead-lettered there (wrong_shard)
    body = {"type": "topup", "user_id": 5, "amount": 1}
    for seq in range(1, 31):
        as_legacy.rpushx(
            KEYS.inbox(wrong), json.dumps({**body, "source": "p:misrouted", "seq": seq})
        )
    # every source a re-drive could be counted under, pre-claimed far ahead, as both kinds of
    # producer credential can
    claim = {**body, "source": f"p:dlq.{wrong}.wrong_shard", "seq": 10**9}
    as_legacy.rpushx(KEYS.inbox(right), json.dumps(claim))
    far = topups(tmp_path / "far.jsonl", [None] * 100 + [body])
    ok(run_cli(hostile, "produce", "file", str(far), "--source", f"dlq.{wrong}.wrong_shard"))
    root = connect(port, "root")
    with worker(port, tmp_path):
        wait_idle(root)
        before = balances(admin)["5"]
        assert before == 2  # the two claims themselves
        out = json.loads(ok(run_cli(admin, "dlq", "redrive", "--reason", "wrong_shard", "--json")))
        assert out["redriven"] == 30, out
        wait_idle(root)
        assert balances(admin)["5"] == before + 30
    assert json.loads(ok(run_cli(admin, "verify", "--json")))["ok"]


def test_producers_add_list_remove(port: int, tmp_path: Path) -> None:
    admin = init(port)
    bad = run_cli(admin, "producers", "add", "Bad Name")
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1, bad.stderr
    assert run_cli(admin, "producers", "add", "ops").returncode == 2  # reserved
    # only the admin may add one: a producer's credentials are refused
    assert (
        run_cli(
            cli_env(f"redis://127.0.0.1:{port}/0", "producer"), "producers", "add", "x"
        ).returncode
        == 1
    )
    shop = identity_env(admin, "shop")
    text = ok(run_cli(admin, "producers", "add", "other"))
    assert text.startswith("REDIS_URL=redis://eventfleet-producer-other:")
    for u in range(1, 6):
        ok(run_cli(shop, "produce", "topup", "--user", str(u), "--amount", "3"))
    rows = {r["name"]: r for r in json.loads(ok(run_cli(admin, "producers", "list", "--json")))}
    assert rows["shop"]["waiting"] == 5 and rows["other"]["waiting"] == 0
    assert rows["legacy"]["waiting"] == 0
    # no worker: the user goes at once, the events stay, the identity stays registered
    left = run_cli(admin, "producers", "remove", "shop", "--wait", "0")
    assert left.returncode == 1 and "5 events" in left.stderr, left.stderr
    assert run_cli(shop, "produce", "topup", "--user", "1", "--amount", "3").returncode != 0
    root = connect(port, "root")
    with worker(port, tmp_path):
        wait_idle(root)
        ok(run_cli(admin, "producers", "remove", "shop"))
    assert balances(admin) == {str(u): 3 for u in range(1, 6)}
    names = [r["name"] for r in json.loads(ok(run_cli(admin, "producers", "list", "--json")))]
    assert names == ["legacy", "other"]
    missing = run_cli(admin, "producers", "remove", "shop")
    assert missing.returncode == 2 and "no producer" in missing.stderr


def test_add_with_a_password_file_sets_that_password(port: int, tmp_path: Path) -> None:
    """`producers add app --password-file` (what the shipped set-ups run after init, again on
    every start): the user logs in with the file's password, the URL printed carries the user
    only, a second run changes nothing, and a short password is refused (exit 2)."""
    admin = init(port)
    short = tmp_path / "short"
    short.write_text("hunter2\n")
    refused = run_cli(admin, "producers", "add", "app", "--password-file", str(short))
    assert refused.returncode == 2 and "at least 32" in refused.stderr
    secret = tmp_path / "app.password"
    password = "p" * 40
    secret.write_text(password + "\n")
    for _ in range(2):
        out = ok(run_cli(admin, "producers", "add", "app", "--password-file", str(secret)))
        assert out.strip() == f"REDIS_URL=redis://eventfleet-producer-app@127.0.0.1:{port}/0"
    env = {k: v for k, v in admin.items() if k != "EVENTFLEET_REDIS_USERNAME"}
    env.update({"EVENTFLEET_REDIS_USERNAME": "eventfleet-producer-app",
                "REDIS_PASSWORD_FILE": str(secret)})  # fmt: skip
    ok(run_cli(env, "produce", "topup", "--user", "3", "--amount", "5"))
    root = connect(port, "root")
    assert root.llen(KEYS.inbox(user_shard(3, COUNTS), "app")) == 2
