"""The shipped ACL file's users on Redis Cluster: what docs/SECURITY.md says they need there,
an admin reaching a cluster in this process (redis-py 5.0 could not: `make test-min` runs this
file's redis-tier test), and a fleet under those users through a SIGKILL."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from redis import exceptions as rx

from eventfleet.ledger.codec import encode
from eventfleet.ledger.events import Charge
from eventfleet.ledger.shards import user_shard
from eventfleet.local.cluster import LocalCluster
from eventfleet.local.fleet import LocalFleet
from eventfleet.producer.client import Producer
from eventfleet.producer.workload import mixed
from eventfleet.store.keys import EVENT_FIELD, Keys
from eventfleet.store.namespace import read_counts
from tests.fleet_utils import FAST, log_lines
from tests.helpers import cli, cli_json, wait_for
from tests.recompute import check_against_logs
from tests.test_cluster import client, wait_idle

CLUSTER_ACL = "+cluster|slots +cluster|shards +command +command|getkeys +asking"
"""What docs/SECURITY.md says each user needs on top of the shipped ACL file on a cluster."""


def _acl_cluster(tmp_path: Path) -> LocalCluster:
    """A cluster with the shipped ACL file (plus ``CLUSTER_ACL``) and a root user."""
    from tests.secure_redis import ACL_FILE, ROOT_PASSWORD, ROOT_USER

    lines = ACL_FILE.read_text(encoding="utf-8").splitlines()
    acl = tmp_path / "users.acl"
    acl.write_text(
        "\n".join(
            f"{ln} {CLUSTER_ACL}" if ln.startswith("user eventfleet-") else ln for ln in lines
        )
        + f"\nuser {ROOT_USER} on >{ROOT_PASSWORD} ~* &* +@all\n"
    )
    return LocalCluster(
        workdir=tmp_path / "cluster",
        extra_args=["--aclfile", str(acl)],
        username=ROOT_USER,
        password=ROOT_PASSWORD,
    )


def test_a_shipped_acl_user_reaches_a_cluster(tmp_path: Path) -> None:
    """The client library's part of the next test, in this process (redis-py 5.0 could not:
    `make test-min` runs this tier)."""
    from tests.secure_redis import password

    c = _acl_cluster(tmp_path)
    try:
        c.start()
        url = f"redis://eventfleet-admin:{password('admin')}@127.0.0.1:{c.live()[1].port}/0"
        made = cli(
            "init", "--user-shards", "2", "--item-shards", "2", "--json", env={"REDIS_URL": url}
        )
        assert json.loads(made.stdout)["created"] is True
        assert cli_json("status", "--json", env={"REDIS_URL": url})["totals"]["lag"] == 0
    finally:
        c.close()


def test_shipped_acl_users_run_the_fleet_on_a_cluster(
    tmp_path: Path, fleet_factory: list[LocalFleet]
) -> None:
    from tests.secure_redis import ROOT_PASSWORD, ROOT_USER, password

    c = _acl_cluster(tmp_path)
    try:
        c.start()
        port = c.live()[1].port

        def url(role: str) -> str:
            return f"redis://eventfleet-{role}:{password(role)}@127.0.0.1:{port}/0"

        cli("init", "--user-shards", "8", "--item-shards", "8", env={"REDIS_URL": url("admin")})
        fleet = LocalFleet(url("worker"), "eventfleet", tmp_path / "logs", env=dict(FAST))
        fleet_factory.append(fleet)
        ws = [fleet.start(), fleet.start()]
        producer = client(url("producer"))
        counts = read_counts(client(url("admin")), Keys("eventfleet"))
        events = list(mixed(3000, seed=41))
        Producer(producer, Keys("eventfleet"), counts).publish(events)
        keys = Keys("eventfleet")
        forged = encode(Charge(order_id="f", user_id=1, item_id="x", qty=1, amount=9), "i0", 10**6)
        target = user_shard(1, counts)
        with pytest.raises(rx.NoPermissionError):
            producer.xadd(keys.events(target), {EVENT_FIELD: forged})
        assert producer.rpushx(keys.inbox(target), forged) > 1  # type: ignore[misc]
        root = client(f"redis://{ROOT_USER}:{ROOT_PASSWORD}@127.0.0.1:{port}/0")
        wait_idle(root, "eventfleet", counts)
        letters = [f[b"reason"] for _id, f in root.xrange(keys.dlq(target))]
        assert letters == [b"forged_internal"]
        assert all(w.alive for w in ws)
        # a SIGKILL is seen through the liveness connection on the node of NS:workers
        fleet.kill(ws[0])
        more = list(mixed(1000, seed=42, prefix="k"))
        Producer(producer, Keys("eventfleet"), counts).publish(more)
        wait_for(
            lambda: any(
                e["event"] == "lease_acquired"
                and str(e.get("broke")).startswith(ws[0].worker_id + ":")
                for e in log_lines(ws[1])
            ),
            60,
            "the survivor to break the dead worker's leases",
        )
        wait_idle(root, "eventfleet", counts)
        refused = [e for w in ws for e in log_lines(w) if "permission" in str(e.get("error"))]
        assert refused == []
        check_against_logs(root, "eventfleet", events + more)
    finally:
        c.close()
