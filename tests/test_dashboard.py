"""Static checks of the Grafana dashboard and its provisioning: only contract metrics, the
fleet's signals on show, PromQL that promtool parses, a sound panel layout.

No Docker engine or cluster runs where the tests run, so each file is checked against the
schema or tool that its consumer uses, and against the names fixed by docs/CONTRACTS.md."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from tests.deploy_files import (
    DEPLOY,
    compose,
    contract_metrics,
    dashboard,
    dashboard_exprs,
    load_yaml,
    promtool_check,
)
from tests.promql import contract_base_name, promql_metric_names


def test_promql_name_extraction() -> None:
    names = promql_metric_names(
        'histogram_quantile(0.99, sum by (le, family) (rate(a_bucket{x="y"}[$__rate_interval])))'
        " / on (shard) group_left up"
    )
    assert names == {"a_bucket", "up"}


def test_dashboard_uses_only_contract_metrics() -> None:
    metrics = contract_metrics()
    for expr in dashboard_exprs():
        names = promql_metric_names(expr)
        assert names, f"no metric in {expr!r}"
        unknown = {n for n in names if contract_base_name(n, metrics) not in metrics}
        assert not unknown, f"{expr!r} uses metrics not in CONTRACTS.md: {sorted(unknown)}"


def test_dashboard_covers_the_fleet() -> None:
    exprs = dashboard_exprs()
    joined = "\n".join(exprs)

    def has(pattern: str) -> bool:
        return any(re.search(pattern, e) for e in exprs)

    assert has(r"by \(type\) \(rate\(eventfleet_events_applied_total"), "throughput by type"
    assert has(r"by \(shard\) \(eventfleet_shard_lag\)"), "lag per shard"
    assert has(r"by \(shard\) \(eventfleet_shard_pending\)"), "pending per shard"
    for q in ("0.5", "0.99"):
        assert has(rf"histogram_quantile\({q}, .*eventfleet_end_to_end_latency_seconds_bucket")
    assert has(r"by \(instance\) \(eventfleet_shards_owned\)"), "shards per worker"
    for name in ("acquisitions", "handovers", "losses"):
        assert f"eventfleet_lease_{name}_total" in joined
    for name in ("snapshot_age_seconds", "dead_letters_total", "redis_errors_total"):
        assert f"eventfleet_{name}" in joined
    assert has(r"histogram_quantile\(.*eventfleet_recovery_duration_seconds_bucket")
    assert "sum(eventfleet_shard_lag)" in exprs, "the autoscaling signal should be on show"


def test_dashboard_promql_parses(tmp_path: Path) -> None:
    substitutions = {"$__rate_interval": "1m", "$__range": "1h", "$__interval": "15s"}
    rules = []
    for i, expr in enumerate(dashboard_exprs()):
        concrete = expr
        for variable, value in substitutions.items():
            concrete = concrete.replace(variable, value)
        assert "$" not in concrete, f"unhandled Grafana variable in {expr!r}"
        rules.append({"record": f"dashboard:expr_{i}", "expr": concrete})
    rule_file = tmp_path / "dashboard-rules.yml"
    rule_file.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    promtool_check("rules", str(rule_file))


def test_dashboard_model_is_sound() -> None:
    data = dashboard()
    assert data["schemaVersion"] >= 39
    assert data["uid"] and data["title"]
    datasources = load_yaml(DEPLOY / "grafana/provisioning/datasources/prometheus.yml")
    uid = datasources["datasources"][0]["uid"]
    ids = [panel["id"] for panel in data["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    cells: set[tuple[int, int]] = set()
    for panel in data["panels"]:
        assert panel["type"] in {"row", "timeseries", "stat"}, panel["type"]
        pos = panel["gridPos"]
        assert pos["x"] >= 0 and pos["x"] + pos["w"] <= 24, panel["title"]
        area = {
            (x, y)
            for x in range(pos["x"], pos["x"] + pos["w"])
            for y in range(pos["y"], pos["y"] + pos["h"])
        }
        assert not area & cells, f"panel {panel['title']!r} overlaps another"
        cells |= area
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == uid, panel["title"]
            assert panel["targets"], panel["title"]
            for target in panel["targets"]:
                assert target["datasource"]["uid"] == uid, panel["title"]


def test_grafana_provisioning_points_at_the_mounted_dashboards() -> None:
    providers = load_yaml(DEPLOY / "grafana/provisioning/dashboards/eventfleet.yml")
    path = providers["providers"][0]["options"]["path"]
    grafana = compose()["services"]["grafana"]
    mounts = {m.split(":")[1]: m.split(":")[0] for m in grafana["volumes"]}
    assert mounts[path] == "./deploy/grafana/dashboards"
    assert mounts["/etc/grafana/provisioning"] == "./deploy/grafana/provisioning"
    datasources = load_yaml(DEPLOY / "grafana/provisioning/datasources/prometheus.yml")
    assert datasources["datasources"][0]["url"] == "http://prometheus:9090"
    assert grafana["ports"] == ["127.0.0.1:3000:3000"]
