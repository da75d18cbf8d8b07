"""The shipped dashboard and alerts against a REAL Prometheus server scraping two workers,
the exporter and an HTTP API (``eventfleet api``, answering a few 200s and 401s) under load, with a worker killed and a malformed entry injected: the
dashboard's variable queries list the namespace, job and instances, every dashboard query
(variables filled in) returns data, every alert expression evaluates, the
fleet-absent alert fires once the workers are stopped, and the exporter alone shows the
backlog produced while no worker runs.

The alert rules are loaded as shipped but with every `for` set to 0s (the durations are
promtool's to test, tests/test_alert_rules.py): this test is about the expressions meeting
real series."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import redis

from eventfleet.chaos.paced import PacedProducer
from eventfleet.ledger.events import Topup
from eventfleet.local.api import LocalApi
from eventfleet.local.fleet import LocalFleet
from eventfleet.local.redisserver import LocalRedis
from eventfleet.ops.reshard_online import Run
from eventfleet.producer.client import Producer
from eventfleet.producer.workload import mixed
from eventfleet.store.keys import EVENT_FIELD, Keys
from tests.api_helpers import bearer, call
from tests.deploy_files import (
    DASHBOARD_VARIABLES,
    dashboard,
    dashboard_exprs,
    fill_variables,
    load_yaml,
)
from tests.fleet_utils import owners, setup_namespace
from tests.helpers import wait_for
from tests.live_exporter import running_exporter
from tests.live_prometheus import Prometheus, running_prometheus
from tests.live_worker import fleet_of_two, start, wait_ready
from tests.promql import RULES

DEADLINE_S = 60


def rules_without_for() -> dict[str, Any]:
    rules = copy.deepcopy(load_yaml(RULES))
    for group in rules["groups"]:
        for rule in group["rules"]:
            rule.pop("for", None)
    return rules


def alert_exprs() -> dict[str, str]:
    return {r["alert"]: r["expr"] for g in load_yaml(RULES)["groups"] for r in g["rules"]}


def variable_values(prom: Prometheus, namespace: str) -> dict[str, list[str]]:
    """Each query variable of the dashboard as Grafana would list it, with the variables it
    depends on set to the test's namespace and "All"."""
    values = {"$namespace": namespace, "$job": ".*", "$instance": ".*"}
    out = {}
    for variable in dashboard()["templating"]["list"]:
        if variable["type"] != "query":
            continue
        found = re.fullmatch(r"label_values\((.*), (\w+)\)", variable["definition"])
        assert found, variable["definition"]
        selector = fill_variables(found.group(1), values)
        out[variable["name"]] = prom.label_values(found.group(2), selector)
    return out


def empty_queries(prom: Prometheus, namespace: str) -> list[str]:
    values = DASHBOARD_VARIABLES | {"$namespace": namespace, "$__rate_interval": "15s"}
    return [
        expr
        for expr in dashboard_exprs()
        if not prom.query(fill_variables(expr, values | {"$__range": "5m"}))
    ]


def test_dashboard_and_alerts_against_a_real_prometheus(
    r: redis.Redis,
    redis_server: LocalRedis,
    namespace: str,
    env: dict[str, str],
    tmp_path: Path,
    fleet_factory: list[LocalFleet],
) -> None:
    counts = setup_namespace(r, namespace)
    keys = Keys(namespace)
    fleet = fleet_of_two(redis_server.url, namespace, tmp_path, fleet_factory, counts)
    a, b = start(fleet), start(fleet)
    wait_ready(a)
    wait_ready(b)
    with (
        running_exporter(env, tmp_path / "exporter", interval_s=0.5) as ex,
        LocalApi(redis_server.url, namespace, tmp_path / "api.log") as api,
        running_prometheus(
            tmp_path / "prometheus",
            {
                "eventfleet-worker": [a.port, b.port],
                "eventfleet-exporter": [ex.port],
                "eventfleet-api": [api.port],
            },
            rules_without_for(),
        ) as prom,
    ):
        # the API row's series: 200s (any password logs in as the session Redis' default
        # user) and 401s (no token)
        assert call(api.url, "GET", "/v1/users/1/balance", None, bearer("default", "x"))[0] == 200
        assert call(api.url, "GET", "/v1/users/1/balance")[0] == 401
        load = PacedProducer(r, keys, counts, mixed(50_000, seed=3), rate=500)
        load.start()
        try:
            wait_for(
                lambda: (
                    prom.targets_up()
                    == {"eventfleet-worker": 2, "eventfleet-exporter": 1, "eventfleet-api": 1}
                ),
                DEADLINE_S,
                "Prometheus to scrape both workers, the exporter and the API",
            )
            # A malformed entry (a dead letter), then one worker killed under load.
            r.xadd(keys.events("i1"), {EVENT_FIELD: b"{oops"})
            wait_for(
                lambda: (
                    prom.query("eventfleet_worker_shards_owned > 0")
                    and len(prom.query("eventfleet_worker_shards_owned > 0")) == 2
                ),
                DEADLINE_S,
                "both workers to hold shards in Prometheus",
            )
            fleet.kill(b.proc)
            wait_for(
                lambda: set(owners(r, namespace, counts).values()) == {a.id},
                DEADLINE_S,
                "the survivor to take the killed worker's shards over",
            )
            # an online reshard's first step recorded (as the command records it), so the
            # dashboard's resharding row has series; workers do nothing with it yet
            run = Run(r, keys)
            run.take()
            run.begin(counts, counts.users * 2, counts.items)
            empty: list[str] = []

            def every_query_has_data() -> bool:
                empty[:] = empty_queries(prom, namespace)
                return not empty

            try:
                wait_for(every_query_has_data, DEADLINE_S, "every dashboard query to have data")
            except AssertionError as exc:
                raise AssertionError(f"{exc}; still empty: {empty}") from None
            options = variable_values(prom, namespace)
            assert namespace in options["namespace"], options
            assert options["job"] == ["eventfleet-worker"], options
            assert f"127.0.0.1:{a.port}" in options["instance"], options
            for expr in alert_exprs().values():
                prom.query(expr)  # every alert expression evaluates against the real series
            dead = 'eventfleet_shard_dead_letters{shard="i1"}'
            try:
                wait_for(
                    lambda: "EventfleetDeadLetters" in prom.firing(),
                    DEADLINE_S,
                    "the dead-letter alert to fire",
                )
            except AssertionError as exc:
                raise AssertionError(f"{exc}; {dead}: {prom.query(dead)}") from None
            assert prom.firing()["EventfleetDeadLetters"][0]["shard"] == "i1"
            assert "EventfleetFleetAbsent" not in prom.firing()
        finally:
            load.stop.set()
            load.join(timeout=30)
        assert load.error is None, load.error

        # Every worker stopped: the fleet-absent alert fires, the exporter alone shows the
        # backlog produced meanwhile, and every shard without an owner.
        assert fleet.terminate(a.proc) == 0
        # Published into the inboxes, with nobody to move them into a log: they count in the
        # lag, and their wait in its seconds (a lag-age alert can fire when it matters).
        Producer(r, keys, counts).publish([Topup(user_id=u, amount=1) for u in range(1, 201)])
        wait_for(
            lambda: {"EventfleetFleetAbsent", "EventfleetShardWithoutOwner"} <= set(prom.firing()),
            DEADLINE_S,
            "the fleet-absent and shard-without-owner alerts to fire",
        )
        absent = prom.firing()["EventfleetFleetAbsent"]
        assert {"alertname": "EventfleetFleetAbsent", "severity": "critical"} in absent
        lag = f'sum(eventfleet_shard_lag{{eventfleet_namespace="{namespace}"}})'
        wait_for(
            lambda: float(prom.query(lag)[0]["value"][1]) >= 200,
            DEADLINE_S,
            "the exporter's lag to show the backlog with no worker running",
        )
        unowned = prom.query(
            f'sum(1 - eventfleet_shard_has_owner{{eventfleet_namespace="{namespace}"}})'
        )
        assert float(unowned[0]["value"][1]) == len(counts.all_shards())
        age = f'max(eventfleet_shard_lag_seconds{{eventfleet_namespace="{namespace}"}})'
        wait_for(
            lambda: float(prom.query(age)[0]["value"][1]) > 0,
            DEADLINE_S,
            "the age of events waiting in inboxes with no worker running",
        )
        assert not prom.query("eventfleet_build_info"), "no worker series is left"
