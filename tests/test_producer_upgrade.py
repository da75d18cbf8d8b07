"""Moving a namespace made before producer identities, with the shipped ACL and by the steps
of docs/OPERATIONS.md ("Moving a namespace made before identities") followed as written.

Before: the shared `eventfleet-producer` user, the shared inboxes, sources and idempotency
keys unscoped (meta without the backlog bounds). A named-source file and idempotency-keyed
top-ups are applied. Then: `eventfleet init` again as the admin, `producers add`, the same file
and keys re-published through the shared user (applied once: nothing doubles), new events
through the identity (applied, even under the same source name and key: they count in its
scope), the shared user turned off as the doc says (live and in the ACL file, which a Redis
restart then loads), and `eventfleet verify` passes.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from eventfleet.ledger.shards import ShardCounts
from eventfleet.local.fleet import LocalFleet
from eventfleet.local.redisserver import LocalRedis
from eventfleet.ops.status import is_idle
from eventfleet.store.keys import Keys
from tests.helpers import wait_for
from tests.test_restart_shipped import cli_process, client_of, env_of

NS = "eventfleet"
KEYS = Keys(NS)
COUNTS = ShardCounts(2, 2)
SHARDS = {"EVENTFLEET_USER_SHARDS": "2", "EVENTFLEET_ITEM_SHARDS": "2"}


def write(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def balances(admin: dict[str, str]) -> dict[str, int]:
    state = json.loads(cli_process("state", "all", "--json", env=admin).stdout)
    return {u: v["balance"] for u, v in state["users"].items()}


def test_moving_a_namespace_made_before_identities(
    tmp_path: Path, fleet_factory: list[LocalFleet]
) -> None:
    server = LocalRedis(workdir=tmp_path / "redis", shipped=True).start()
    assert server.logins is not None
    logins = server.logins
    try:
        admin = env_of(server.url, logins, "admin", **SHARDS)
        legacy = env_of(server.url, logins, "producer")
        root = client_of(server.port, logins, "root")

        def idle() -> None:
            wait_for(lambda: is_idle(root, KEYS, COUNTS), 90, "the fleet to become idle")

        # ---- a namespace as it was before identities: no bounds in meta, no registry
        cli_process("init", env=admin)
        root.hdel(KEYS.meta, "producer_backlog", "producer_backlog_bytes")
        fleet = LocalFleet(server.url, NS, tmp_path / "workers", env=logins.env("worker"))
        fleet_factory.append(fleet)
        fleet.start()
        nightly = write(
            tmp_path / "nightly.jsonl",
            [{"type": "topup", "user_id": u, "amount": 10} for u in (1, 2, 3, 4) for _ in range(5)],
        )
        keyed = [("5", "100", "refill-5"), ("6", "200", "refill-6")]

        def publish_old(env: dict[str, str]) -> None:
            cli_process("produce", "file", str(nightly), "--source", "nightly", env=env)
            for user, amount, key in keyed:
                cli_process(
                    "produce", "topup", "--user", user, "--amount", amount, "--key", key, env=env
                )

        publish_old(legacy)
        idle()
        before = balances(admin)
        assert before == {"1": 50, "2": 50, "3": 50, "4": 50, "5": 100, "6": 200}

        # ---- the documented steps: init once as the admin (the bounds in meta) ...
        cli_process("init", env=admin)
        assert root.hget(KEYS.meta, "producer_backlog") is not None
        # ... one identity per producer, its URL handed over
        added = json.loads(
            cli_process("producers", "add", "nightly-job", "--json", env=admin).stdout
        )
        identity = {"REDIS_URL": added["redis_url"], "EVENTFLEET_NAMESPACE": NS}

        # the shared user keeps working: the same file and keys again apply once
        publish_old(legacy)
        idle()
        assert balances(admin) == before, "a re-publish through the shared user doubled"

        # the identity's events apply, also under the same source name and key (its scope)
        fresh = write(tmp_path / "fresh.jsonl", [{"type": "topup", "user_id": 7, "amount": 3}] * 4)
        cli_process("produce", "file", str(fresh), "--source", "nightly", env=identity)
        cli_process(
            "produce", "topup", "--user", "5", "--amount", "7", "--key", "refill-5", env=identity
        )
        idle()
        assert balances(admin) == {**before, "5": 107, "7": 12}

        # ---- turning the shared user off, as the doc says: `producers list` first
        rows = json.loads(cli_process("producers", "list", "--json", env=admin).stdout)
        assert {r["name"]: r["waiting"] for r in rows} == {"legacy": 0, "nightly-job": 0}
        admin_r = client_of(server.port, logins, "admin")
        admin_r.execute_command("ACL", "SETUSER", "eventfleet-producer", "off")
        refused = cli_process(
            "produce", "topup", "--user", "1", "--amount", "1", env=legacy, check=False
        )
        assert refused.returncode != 0
        assert "Traceback" not in refused.stderr
        # ... and `off` on its line in the ACL file: it stays off across a Redis restart, and
        # the identity (saved to the file by `producers add`) is still there
        aclfile = tmp_path / "redis" / "users.acl"
        text = aclfile.read_text()
        text, n = re.subn(r"^(user eventfleet-producer) on ", r"\1 off ", text, flags=re.M)
        assert n == 1, "the shared user's line in the ACL file"
        aclfile.write_text(text)
        server.stop()
        server.start(timeout=60)
        assert cli_process("produce", "topup", "--user", "1", "--amount", "1", env=legacy,
                           check=False).returncode != 0  # fmt: skip
        cli_process("produce", "topup", "--user", "8", "--amount", "9", env=identity)
        idle()
        assert balances(admin) == {**before, "5": 107, "7": 12, "8": 9}
        cli_process("verify", env=admin)
    finally:
        server.stop()
