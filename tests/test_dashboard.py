"""Static checks of the Grafana dashboard and its provisioning: only contract metrics, the
fleet's signals on show, PromQL that promtool parses, a sound panel layout.

No Docker engine or cluster runs where the tests run, so each file is checked against the
schema or tool that its consumer uses, and against the names fixed by docs/CONTRACTS.md."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from tests.deploy_files import (
    DASHBOARD,
    DASHBOARD_VARIABLES,
    DEPLOY,
    compose,
    contract_api_metrics,
    contract_exporter_metrics,
    contract_metrics,
    dashboard,
    dashboard_exprs,
    fill_variables,
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


WORKER_SELECTOR = '{eventfleet_namespace="$namespace", job=~"$job", instance=~"$instance"}'
EXPORTER_SELECTOR = '{eventfleet_namespace="$namespace"}'
API_SELECTOR = r'\{eventfleet_namespace="\$namespace"(, (class|code)=~?"[0-9x|]+")?\}'


def test_dashboard_uses_only_contract_metrics() -> None:
    metrics = contract_metrics() | contract_exporter_metrics() | contract_api_metrics()
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
    assert has(r"by \(shard\) \(eventfleet_shard_lag\{"), "lag per shard"
    assert has(r"by \(shard\) \(eventfleet_shard_lag_seconds\{"), "lag in seconds per shard"
    assert has(r"by \(shard\) \(eventfleet_shard_pending\{"), "pending per shard"
    assert has(r"eventfleet_shard_has_owner\{"), "shards without an owner"
    assert has(r"eventfleet_shards\{"), "the shard count"
    for q in ("0.5", "0.99"):
        assert has(rf"histogram_quantile\({q}, .*eventfleet_end_to_end_latency_seconds_bucket")
    assert has(r"by \(instance\) \(eventfleet_worker_shards_owned\{"), "shards per worker"
    assert has(r"eventfleet_redis_used_memory_bytes\{"), "Redis memory"
    assert has(r"eventfleet_redis_maxmemory_bytes\{"), "against its limit"
    assert has(r"eventfleet_exporter_pass_ok\{"), "whether the exporter reads Redis"
    assert has(r"eventfleet_exporter_pass_duration_seconds\{"), "the exporter's pass time"
    for name in ("acquisitions", "handovers", "losses"):
        assert f"eventfleet_lease_{name}_total" in joined
    for name in ("snapshot_age_seconds", "dead_letters_total", "redis_errors_total"):
        assert f"eventfleet_{name}" in joined
    assert has(r"histogram_quantile\(.*eventfleet_recovery_duration_seconds_bucket")
    assert has(r"max\(eventfleet_reshard_state\{"), "a running reshard's state"
    assert has(r"by \(family, status\) \(eventfleet_reshard_parents\{"), "parents split, waiting"
    assert has(r"by \(family\) \(eventfleet_reshard_target_shards\{"), "the reshard's target"
    assert has(r"eventfleet_reshard_running_seconds\{"), "how long it has run"
    autoscaling = f"sum(eventfleet_shard_lag{EXPORTER_SELECTOR})"
    assert autoscaling in exprs, "the autoscaling signal should be on show"


def test_dashboard_has_an_http_api_row() -> None:
    exprs = dashboard_exprs()

    def has(pattern: str) -> bool:
        return any(re.search(pattern, e) for e in exprs)

    assert has(r"by \(route, class\) \(rate\(eventfleet_api_requests_total\{"), "rate by route"
    for q in ("0.5", "0.99"):
        assert has(rf"histogram_quantile\({q}, .*eventfleet_api_request_duration_seconds_bucket")
    assert has(r'eventfleet_api_requests_total\{[^}]*class=~"4xx\|5xx"'), "4xx/5xx"
    assert has(r'eventfleet_api_requests_total\{[^}]*class="5xx"'), "the 5xx ratio"
    assert has(r'eventfleet_api_requests_total\{[^}]*code="429"'), "429s"


def test_every_alert_has_its_series_on_the_dashboard() -> None:
    """What an alert fires on can be looked at: each metric of each shipped rule is in some
    panel (Redis memory and the exporter's passes had alerts and no panel)."""
    rules = load_yaml(DEPLOY / "prometheus" / "rules.yml")
    on_show = set().union(*(promql_metric_names(e) for e in dashboard_exprs()))
    for group in rules["groups"]:
        for rule in group["rules"]:
            missing = promql_metric_names(rule["expr"]) - on_show
            assert not missing, f"{rule['alert']}: {sorted(missing)} on no panel"


def test_every_series_is_selected_by_the_dashboard_variables() -> None:
    """Worker series by namespace, job and instance; the exporter's by namespace: two fleets
    in one Prometheus are never summed together."""
    exporter = set(contract_exporter_metrics())
    api = {contract_base_name(n, contract_api_metrics()) for n in contract_api_metrics()}
    for expr in dashboard_exprs():
        for name, selector in re.findall(r"\b(eventfleet_[a-z_]+)(\{[^}]*\})?", expr):
            if contract_base_name(name, contract_api_metrics()) in api:
                # the API processes by namespace (not the workers' job and instance), and
                # optionally a status class or code
                assert re.fullmatch(API_SELECTOR, selector), f"{name} in {expr!r}"
                continue
            expected = EXPORTER_SELECTOR if name in exporter else WORKER_SELECTOR
            assert selector == expected, f"{name} in {expr!r} is not selected by {expected}"


def test_the_dashboard_imports_into_any_grafana() -> None:
    """No data source uid of ours: every panel and target uses the data source variable, and
    the variables are data source, namespace, job and instance."""
    data = dashboard()
    assert "eventfleet-prometheus" not in DASHBOARD.read_text(encoding="utf-8")
    variables = {v["name"]: v for v in data["templating"]["list"]}
    assert list(variables) == ["datasource", "namespace", "job", "instance"]
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for name in ("namespace", "job", "instance"):
        v = variables[name]
        assert v["type"] == "query" and v["datasource"]["uid"] == "${datasource}", name
        assert "eventfleet_" in v["definition"], name
        # the plain-string query form every Grafana since 7 reads (newer ones migrate it)
        assert v["query"] == v["definition"], name
    assert variables["job"]["allValue"] == variables["instance"]["allValue"] == ".*"
    for panel in data["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        for target in panel["targets"]:
            assert target["datasource"] == panel["datasource"], panel["title"]


def test_dashboard_promql_parses(tmp_path: Path) -> None:
    rules = []
    for i, expr in enumerate(dashboard_exprs()):
        concrete = fill_variables(expr, DASHBOARD_VARIABLES)
        rules.append({"record": f"dashboard:expr_{i}", "expr": concrete})
    rule_file = tmp_path / "dashboard-rules.yml"
    rule_file.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    promtool_check("rules", str(rule_file))


def test_dashboard_model_is_sound() -> None:
    data = dashboard()
    assert data["schemaVersion"] >= 39
    assert data["uid"] and data["title"]
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
            assert panel["targets"], panel["title"]


def test_grafana_provisioning_points_at_the_mounted_dashboards() -> None:
    providers = load_yaml(DEPLOY / "grafana/provisioning/dashboards/eventfleet.yml")
    path = providers["providers"][0]["options"]["path"]
    grafana = compose()["services"]["grafana"]
    mounts = {m.split(":")[1]: m.split(":")[0] for m in grafana["volumes"]}
    assert mounts[path] == "./deploy/grafana/dashboards"
    assert mounts["/etc/grafana/provisioning"] == "./deploy/grafana/provisioning"
    datasources = load_yaml(DEPLOY / "grafana/provisioning/datasources/prometheus.yml")
    (source,) = datasources["datasources"]
    assert source["url"] == "http://prometheus:9090"
    # the dashboard's data source variable picks the default one: the provisioned copy works
    assert source["isDefault"] is True and source["type"] == "prometheus"
    assert grafana["ports"] == ["127.0.0.1:3000:3000"]
